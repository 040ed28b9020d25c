"""The Lightning module of every restoration pretext task: a dense network trained on patches by the task's loss,
validated every epoch on whole images with PSNR, SSIM, MAE and MSE against the originals, beside the same metrics
of the task's do-nothing baseline (the degraded input, the mean-filled masked image).

Logged per epoch (metrics.csv, charts, TensorBoard): ``restoration/train_loss``, ``restoration/val_<metric>`` and
``restoration/val_<baseline>_<metric>`` (e.g. ``val_input_psnr``). With a masking task, every
``checks_every_n_epochs`` the first ``checks_num_images`` validation images are written to
``mae_checks/epoch_NNN/`` under BiaPy's names (original, masked, reconstruction, reconstruction_and_visible);
with any other task (crappify, MONAI's ViT autoencoder) as ``slices/epoch_NNN/<name>.png``: a few axial slices,
original | network input (the task's ``input_heading``: view 1 for the autoencoder) | restoration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from innerssl.eval.dense_module import DenseNetworkModule
from innerssl.eval.restoration_metrics import data_range_of, image_metrics
from innerssl.outputs.restoration_checks import (
    EPOCH_FOLDER,
    MAE_CHECKS_FOLDER,
    SLICES_FOLDER,
    write_mae_checks,
    write_slice_picture,
)
from innerssl.restoration.registry import Restoration, build_task

PREFIX = "restoration"


class RestorationModule(DenseNetworkModule):
    checkpoint_kind: ClassVar[str] = "restoration"

    def __init__(
        self,
        network_spec: dict[str, Any],
        task_name: str,
        task_arguments: dict[str, Any],
        normalisation: str = "div",
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 0,
        test_overlap: float = 0.25,
        test_padding: int = 0,
        tile_batch_size: int = 4,
        checks_every_n_epochs: int = 5,
        checks_num_images: int = 2,
        output_suffix: str = ".png",
    ) -> None:
        super().__init__(
            network_spec, learning_rate, weight_decay, warmup_epochs, test_overlap, test_padding, tile_batch_size
        )
        self.save_hyperparameters()
        self.task = build_task(task_name, task_arguments)
        self.task.prepare_network(self.network)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        loss = self.task.training_loss(self.network, batch["image"], batch.get("target"))
        self.log(f"{PREFIX}/train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_learning_rate(PREFIX)
        return loss

    def restore_image(self, batch: dict[str, Any]) -> Restoration:
        """The task's restoration of a whole-image batch of one."""
        target = batch.get("target")
        return self.task.restore(
            self.network, batch["image"][0], None if target is None else target[0], int(batch["index"][0]), self.tiles
        )

    def metrics_of(self, result: Restoration) -> dict[str, float]:
        """The restored image's metrics and the baseline's (``<baseline>_<metric>``), against the original."""
        data_range = data_range_of(self.hparams.normalisation, result.original)
        restored = image_metrics(result.restored, result.original, data_range, result.mask)
        baseline = image_metrics(result.baseline, result.original, data_range, result.mask)
        return {**restored, **{f"{self.task.baseline_name}_{key}": value for key, value in baseline.items()}}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        result = self.restore_image(batch)
        for key, value in self.metrics_of(result).items():
            self.log(f"{PREFIX}/val_{key}", value, on_epoch=True, batch_size=1, sync_dist=True)
        if self.writes_checks(batch_idx):
            root = Path(self.trainer.default_root_dir)
            if self.task.token_networks:
                self.write_checks(result, batch, root / MAE_CHECKS_FOLDER)
            else:
                self.write_slices(result, batch, root / SLICES_FOLDER / EPOCH_FOLDER.format(epoch=self.current_epoch))

    def writes_checks(self, batch_idx: int) -> bool:
        every = self.hparams.checks_every_n_epochs
        return (
            every > 0
            and batch_idx < self.hparams.checks_num_images
            and (self.current_epoch + 1) % every == 0
            and not self.trainer.sanity_checking
            and self.trainer.is_global_zero
        )

    def write_checks(self, result: Restoration, batch: dict[str, Any], folder: Path, epoch: int | None = -1) -> None:
        """BiaPy's mae_checks files of one image (``epoch=-1``: this epoch's folder; None: no epoch folder)."""
        assert result.mask is not None and result.reconstruction is not None
        write_mae_checks(
            folder,
            str(batch["name"][0]),
            result.original.cpu(),
            result.network_input.cpu(),
            result.reconstruction.cpu(),
            result.mask.cpu(),
            self.hparams.output_suffix,
            self.spec.spatial_dims,
            epoch=self.current_epoch if epoch == -1 else epoch,
        )

    def write_slices(self, result: Restoration, batch: dict[str, Any], folder: Path) -> Path:
        """Axial slices of one validation image: original | network input | restoration."""
        name = str(batch["name"][0])
        headings = ("original", self.task.input_heading, "restoration")
        columns = dict(zip(headings, (result.original, result.network_input, result.restored)))
        return write_slice_picture(
            folder / f"{name}.png",
            f"{name}, epoch {self.current_epoch} ({self.hparams.task_name})",
            {heading: image.cpu() for heading, image in columns.items()},
            self.spec.spatial_dims,
        )

    def checkpoint_info(self) -> dict[str, Any]:
        return {
            **super().checkpoint_info(),
            "method": self.hparams.task_name,
            "task_arguments": dict(self.hparams.task_arguments),
        }
