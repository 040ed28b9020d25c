"""SSLClassifierContainer: a classifier from an SSL checkpoint's encoder (linear probe or finetuning)."""

from __future__ import annotations

import logging
from pathlib import Path

import param
import pytorch_lightning as pl

from innerssl.augment.per_sample import build_per_sample_transform
from innerssl.containers.ssl import SSLContainer
from innerssl.data.datamodule import ClassifierDataModule
from innerssl.distributed import effective_learning_rate
from innerssl.errors import UserError
from innerssl.eval.classifier import METRIC_PREFIX, SSLClassifier
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint

logger = logging.getLogger(__name__)


class SSLClassifierContainer(SSLContainer):
    """Trains a classifier on ``linear_head_dataset_name`` from the encoder of an SSL checkpoint.

    The labeled dataset's folder is the first of ``extra_local_dataset_paths`` if given, else
    ``local_dataset``. Without ``local_weights_path`` the encoder starts from random weights (the baseline
    that shows what pretraining adds).
    """

    local_weights_path: str | None = param.String(
        None,
        allow_None=True,
        doc="SSL checkpoint (last.ckpt or best.ckpt of an SSL run) whose encoder the classifier starts from. "
        "None: a randomly initialised encoder.",
    )
    freeze_encoder: bool = param.Boolean(
        True, doc="Train only a linear head on frozen encoder features (false: finetune the whole network)."
    )
    classifier_dropout: float = param.Number(0.0, bounds=(0, 1), doc="Dropout before the classifier's linear layer.")
    use_balanced_binary_loss_for_classifier: bool = param.Boolean(
        False, doc="Weight the positive class by negatives/positives in binary classification losses."
    )

    def validate(self, check_this_machine: bool = True) -> None:
        super().validate(check_this_machine)
        if self.linear_head_dataset_name is None:
            raise UserError("A classifier needs a labeled dataset: set --linear_head_dataset_name")
        local_weights_missing = self.local_weights_path is not None and not Path(self.local_weights_path).is_file()
        if check_this_machine and local_weights_missing:
            raise UserError(
                f"--local_weights_path={self.local_weights_path} does not exist: pass the SSL run's "
                "checkpoints/last.ckpt"
            )

    def labeled_dataset_root(self) -> tuple[Path | None, str]:
        if self.extra_local_dataset_paths:
            return Path(self.extra_local_dataset_paths[0]), "--extra_local_dataset_paths"
        return (Path(self.local_dataset) if self.local_dataset else None), "--local_dataset"

    def create_datamodule(self, run_folder: Path | None = None) -> ClassifierDataModule:
        splits = self.linear_head_splits(run_folder)
        assert splits is not None
        config = self.augmentation("linear_head_augmentation_config")
        return ClassifierDataModule(
            splits,
            train_transform=build_per_sample_transform(config, self.in_channels),
            eval_transform=build_per_sample_transform(config.preprocess_only(), self.in_channels),
            batch_size=self.linear_head_batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
        )

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> SSLClassifier:
        splits = datamodule.splits  # type: ignore[attr-defined]
        module = SSLClassifier(
            encoder_name=self.ssl_encoder,
            in_channels=self.in_channels,
            task=splits.label_info.task,
            class_names=splits.label_info.class_names,
            freeze_encoder=self.freeze_encoder,
            learning_rate=effective_learning_rate(self, self.linear_head_batch_size),
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            dropout=self.classifier_dropout,
            positive_weight=self.positive_weight(splits, self.use_balanced_binary_loss_for_classifier),
            channels_last=self.channels_last,
        )
        if self.local_weights_path is not None and not self.resume:
            state = encoder_state_from_ssl_checkpoint(self.local_weights_path, self.ssl_encoder, self.in_channels)
            module.encoder.load_state_dict(state)
            logger.info("Encoder weights loaded from %s", self.local_weights_path)
        elif self.local_weights_path is None:
            logger.warning("No --local_weights_path: the classifier starts from a randomly initialised encoder")
        return module

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        return []

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        return (f"{METRIC_PREFIX}/val_auroc", "max")

    def uses_sync_batchnorm(self) -> bool:
        return not self.freeze_encoder
