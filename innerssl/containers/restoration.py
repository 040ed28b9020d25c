"""RestorationContainer: BiaPy's self-supervised restoration pretraining (crappify, masking) of a dense network
on 2D images or 3D volumes, with PSNR / SSIM / MAE / MSE against the do-nothing baseline."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl

from innerssl.cloud.parameters import AzureMLParameters
from innerssl.containers.base import Container
from innerssl.containers.groups.data import BAD_FILE_LOG_NAME
from innerssl.containers.groups.dense_network import DenseNetworkParameters
from innerssl.containers.groups.optimisation import OptimisationParameters
from innerssl.containers.groups.patch_data import PatchDataParameters
from innerssl.containers.groups.restoration import RestorationParameters
from innerssl.data.datasets.base import BadFileLog
from innerssl.data.degraded_copies import degraded_copies
from innerssl.data.patch_datamodule import LoadedImage, PatchDataModule, load_split
from innerssl.data.volume_preprocessing import VolumePreprocessing
from innerssl.errors import UserError
from innerssl.eval.dense_module import evaluation_device
from innerssl.eval.token_knn import TokenKNNMonitor, labeled, read_image_labels
from innerssl.networks.dense import DENSE_NETWORKS, DenseNetworkSpec
from innerssl.restoration import pretext_task
from innerssl.restoration.callbacks import RestorationPreviews
from innerssl.restoration.module import PREFIX, RestorationModule

logger = logging.getLogger(__name__)

SSL_SOURCE_SUFFIX = "_ssl_source"
TOKEN_NETWORKS = ("vit_mae",)
VIT_NETWORKS = ("vit_autoenc", "vit_mae")
"""Networks whose encoder is a MONAI ViT (patch_embedding, blocks, norm): the --monitor_labels kNN reads it."""


def output_suffix(images: list[LoadedImage]) -> str:
    """How restored images are written: TIFF for TIFF / .npy data, NIfTI for NIfTI and DICOM volumes, PNG otherwise."""
    suffix = images[0].prediction_format()[0].lower() if images else ".png"
    if suffix in (".tif", ".tiff", ".npy"):
        return ".tif"
    if suffix in (".nii", ".nii.gz"):
        return ".nii.gz"
    return ".png"


class RestorationContainer(
    Container,
    PatchDataParameters,
    DenseNetworkParameters,
    RestorationParameters,
    OptimisationParameters,
    AzureMLParameters,
):
    """Restoration pretraining of a dense network: the network restores degraded copies of unlabeled images."""

    group_title: ClassVar[str] = "Run"

    def network_name(self) -> str:
        return self.network or pretext_task(self.pretext_task).default_network

    def validate_group(self, check_this_machine: bool) -> None:
        name = self.network_name()
        if self.monitor_labels is not None and name not in VIT_NETWORKS:
            raise UserError(
                f"--monitor_labels monitors a ViT's tokens but the network is {name}: use --network="
                f"{' or '.join(VIT_NETWORKS)}, or drop --monitor_labels"
            )
        DENSE_NETWORKS.get(name)
        task = pretext_task(self.pretext_task)(**self.task_arguments())
        task.check(self.intensity_mode(), name, name in TOKEN_NETWORKS)
        self.preprocessing()

    def preprocessing(self) -> VolumePreprocessing:
        """MONAI's deterministic steps (--orientation ... --pad_to_patch), applied once per image at load."""
        return VolumePreprocessing.from_parameters(self, self.patch())

    def intensity_mode(self) -> str:
        """The --normalisation the images have: an --intensity_window scales to [0, 1] with clipping, as
        percentile does."""
        return "percentile" if self.intensity_window else self.normalisation

    def network_spec(self, in_channels: int) -> DenseNetworkSpec:
        return DenseNetworkSpec(
            self.network_name(), self.spatial_dims, in_channels, in_channels, self.patch(), self.network_option_values()
        )

    def create_datamodule(self, run_folder: Path | None = None) -> PatchDataModule:
        bad_file_log = BadFileLog(run_folder / BAD_FILE_LOG_NAME if run_folder is not None else None)
        layout = self.find_dataset_layout(bad_file_log)
        normalisation = self.normaliser()
        preprocessing = self.preprocessing()
        if preprocessing.active:
            logger.info("Preprocessing once per image: %s", preprocessing.describe())
        splits = {
            split: load_split(
                layout, split, normalisation, "none", bad_file_log=bad_file_log, preprocessing=preprocessing
            )
            for split in ("train", "val", "test")
        }
        arguments = self.task_arguments()
        if self.pretext_task == "crappify" and arguments.get("source") == "on_disk":
            splits = self.with_stored_copies(layout.root, splits, arguments)
        datamodule = PatchDataModule(
            splits["train"],
            splits["val"],
            splits["test"],
            patch_size=self.patch(),
            patches_per_image=self.patches_per_image,
            patches_per_epoch=self.patches_per_epoch,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
            flip=self.flip,
        )
        logger.info("%s", datamodule.describe())
        self._has_validation = bool(splits["val"])
        return datamodule

    def with_stored_copies(
        self, root: Path, splits: dict[str, list[LoadedImage]], arguments: dict
    ) -> dict[str, list[LoadedImage]]:
        """BiaPy's on-disk degraded copies as inputs, the originals as targets."""
        folder = self.cache_root() / f"{root.resolve().name}{SSL_SOURCE_SUFFIX}"
        settings = f"{self.normalisation}|{self.percentile_clip}|{self.spatial_dims}"
        steps = self.preprocessing().describe()
        if steps:  # copies of preprocessed images differ; without preprocessing the key (and old copies) stay
            settings += f"|{steps}"
        result: dict[str, list[LoadedImage]] = {}
        for split, images in splits.items():
            copies = degraded_copies(
                images, folder / split, arguments["noise"], arguments["resizing_factor"], self.random_seed, settings
            )
            result[split] = [
                dataclasses.replace(image, image=copy, target=image.image) for image, copy in zip(images, copies)
            ]
        logger.info("--crappify_source=on_disk: degraded copies in %s", folder)
        return result

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> RestorationModule:
        assert isinstance(datamodule, PatchDataModule)
        return RestorationModule(
            network_spec=self.network_spec(datamodule.in_channels).as_dict(),
            task_name=self.pretext_task,
            task_arguments=self.task_arguments(),
            normalisation=self.intensity_mode(),
            learning_rate=self.learning_rate,
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            test_overlap=self.test_overlap,
            test_padding=self.test_padding,
            tile_batch_size=self.tile_batch_size,
            checks_every_n_epochs=self.checks_every_n_epochs,
            checks_num_images=self.checks_num_images,
            output_suffix=output_suffix(datamodule.used_images["train"]),
        )

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        callbacks: list[pl.Callback] = [RestorationPreviews()]
        if self.monitor_labels is not None:
            assert isinstance(datamodule, PatchDataModule)
            labels = read_image_labels(self.monitor_labels)
            monitor = TokenKNNMonitor(
                labeled(datamodule.used_images["train"], labels),
                labeled(datamodule.used_images["val"], labels),
                labels.label_info,
                self.patch(),
                self.monitor_every_n_epochs,
            )
            logger.info(
                "kNN monitor of pooled ViT tokens: %d labeled training and %d validation image(s), classes %s",
                len(monitor.bank),
                len(monitor.queries),
                ", ".join(labels.label_info.class_names),
            )
            callbacks.append(monitor)
        return callbacks

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        # Without validation images the test stage uses the last checkpoint.
        return (f"{PREFIX}/val_psnr", "max") if getattr(self, "_has_validation", True) else None

    def has_test_stage(self) -> bool:
        return True

    def test_stage(
        self, module: pl.LightningModule, datamodule: pl.LightningDataModule, checkpoint: Path, output_root: Path
    ) -> dict[str, float]:
        """Restore the whole test images with the best (else last) checkpoint; BiaPy's outputs in the run folder."""
        from innerssl.restoration.evaluation import run_restoration_test

        assert isinstance(datamodule, PatchDataModule) and isinstance(module, RestorationModule)
        test_images = self.trained_test_images(module, datamodule, checkpoint)
        if not test_images:
            return {}
        return run_restoration_test(module, test_images, output_root, evaluation_device(self.max_num_gpus != 0))
