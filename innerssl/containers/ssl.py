"""SSLContainer: self-supervised pretraining with online linear-head monitoring, composed of parameter groups."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import param
import pytorch_lightning as pl
import torch

from innerssl.cloud.parameters import AzureMLParameters
from innerssl.containers.base import Container
from innerssl.containers.groups.data import DataParameters
from innerssl.containers.groups.encoder import EncoderParameters
from innerssl.containers.groups.method import MethodParameters
from innerssl.containers.groups.monitoring import MonitoringParameters
from innerssl.containers.groups.optimisation import OptimisationParameters
from innerssl.data.datamodule import SSLDataModule
from innerssl.data.datasets.base import DatasetSplits, UsedDataset
from innerssl.data.pipeline import ImageStream
from innerssl.distributed import effective_learning_rate
from innerssl.eval.online_linear import METRIC_PREFIX
from innerssl.networks import create_encoder
from innerssl.registry import DATASETS
from innerssl.ssl import ssl_method


class SSLContainer(
    Container,
    DataParameters,
    EncoderParameters,
    MethodParameters,
    OptimisationParameters,
    MonitoringParameters,
    AzureMLParameters,
):
    """Self-supervised pretraining of an image encoder, monitored by a linear head on a labeled dataset."""

    group_title: ClassVar[str] = "SSL data"
    group_order: ClassVar[int] = 10

    ssl_training_dataset_name: str = param.String(
        "Demo", doc="Registered dataset to pretrain on (unlabeled use), e.g. Demo, CIFAR10, NIH."
    )

    ssl_augmentation_config: str = param.String(
        "augmentations/demo_ssl_augmentations.yaml", doc="YAML augmentations of the SSL views."
    )

    def validate_group(self, check_this_machine: bool) -> None:
        DATASETS.get(self.ssl_training_dataset_name)
        # The method refuses an encoder it cannot train now, not after the datasets are decoded. Built on the meta
        # device: shapes and types only, no memory and no initialisation.
        with torch.device("meta"):
            encoder = create_encoder(self.encoder_spec())
        method_arguments = {"encoder_name": self.ssl_encoder, **self.method_hyperparameters()}
        method = ssl_method(self.ssl_training_type)
        method.check_encoder(encoder, method.hyperparameters_with_defaults(method_arguments))

    def labeled_dataset_root(self) -> tuple[Path | None, str]:
        """Folder of the linear-head dataset and the flag that sets it: without --extra_local_dataset_paths, a
        linear-head dataset that reads the SSL dataset's kind of folder reads --local_dataset."""
        if self.extra_local_dataset_paths:
            return Path(self.extra_local_dataset_paths[0]), "--extra_local_dataset_paths"
        if self.linear_head_dataset_name is not None and DATASETS.share_folder(
            self.linear_head_dataset_name, self.ssl_training_dataset_name
        ):
            return (Path(self.local_dataset) if self.local_dataset else None), "--local_dataset"
        return None, "--extra_local_dataset_paths"

    def ssl_splits(self, run_folder: Path | None = None) -> DatasetSplits:
        root = Path(self.local_dataset) if self.local_dataset else None
        return self.build_dataset(self.ssl_training_dataset_name, root, "--local_dataset", run_folder)

    def create_datamodule(self, run_folder: Path | None = None) -> SSLDataModule:
        """Datasets, stored as configured (building decode caches where needed), and their augmentation streams."""
        ssl_config = self.augmentation("ssl_augmentation_config")
        ssl_splits = self.ssl_splits(run_folder)
        linear_head = self.linear_head_splits(run_folder)
        linear_head_config = self.augmentation("linear_head_augmentation_config") if linear_head else None
        used = [UsedDataset(self.ssl_training_dataset_name, "ssl", ssl_splits)]
        if linear_head is not None:
            used.append(UsedDataset(str(self.linear_head_dataset_name), "linear_head", linear_head))
        storage = self.image_storage([config for config in (ssl_config, linear_head_config) if config is not None])
        ssl_splits = storage.store_splits(ssl_splits, self.ssl_training_dataset_name, ("train", "val"))
        if linear_head is not None:
            linear_head = storage.store_splits(linear_head, str(self.linear_head_dataset_name), ("train", "val"))
        datamodule = SSLDataModule(
            ssl_splits=ssl_splits,
            # The method's own views (two for most methods; DINO's global and local crops), from its hyperparameters.
            ssl_stream=ImageStream(
                ssl_config,
                self.in_channels,
                self.augment_on_device,
                views=ssl_method(self.ssl_training_type).view_groups(self.method_hyperparameters()),
            ),
            ssl_batch_size=self.ssl_training_batch_size,
            linear_head_splits=linear_head,
            linear_head_train_stream=self.image_stream(linear_head_config) if linear_head_config else None,
            linear_head_eval_stream=(
                self.image_stream(linear_head_config.preprocess_only()) if linear_head_config else None
            ),
            linear_head_batch_size=self.linear_head_batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
        )
        datamodule.used_datasets = used
        return datamodule

    def method_arguments(self) -> dict:
        """Every keyword argument of the method's module: the base's (encoder, optimisation) and the method's own."""
        arguments = {
            "encoder_name": self.ssl_encoder,
            "in_channels": self.in_channels,
            "encoder_options": self.encoder_spec().options,
            "learning_rate": effective_learning_rate(self, self.ssl_training_batch_size),
            "weight_decay": self.weight_decay,
            "warmup_epochs": self.warmup_epochs,
            "channels_last": self.channels_last,
            "optimizer_name": self.optimizer,
            "lars_momentum": self.lars_momentum,
            "lars_trust_coefficient": self.lars_trust_coefficient,
        }
        arguments.update(self.method_hyperparameters())
        return arguments

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> pl.LightningModule:
        module = ssl_method(self.ssl_training_type)(**self.method_arguments())
        if not self.resume:  # a resumed run's weights come from its checkpoint
            module.load_encoder_weights(self.encoder_weights)
        return module

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        return self.monitor_callbacks(datamodule)

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        if self.linear_head_dataset_name is None:
            return ("ssl/val_loss", "min")
        return (f"{METRIC_PREFIX}/val_auroc", "max")

    def uses_sync_batchnorm(self) -> bool:
        return True
