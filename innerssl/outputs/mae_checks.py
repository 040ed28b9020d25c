"""MAE reconstruction pictures in the run folder's ``mae_checks/``: does the model fill in the masked patches?

Every ``every_n_epochs`` epochs (and at the last), on global rank zero, :class:`MAEChecks` writes
``mae_checks/epoch_<NNN>.png`` (``NNN``: the trainer's epoch index, as in metrics.csv), one row per image:
original | masked (hidden patches at the image's mean) | reconstruction | reconstruction with the visible patches
pasted back. The same images (the first of the first SSL validation batch the run sees) and the same masks are
used every time, so the pictures show the progress. Each panel is also written alone, named as BiaPy names them:
``mae_checks/epoch_<NNN>/image_<i>_{original,masked,reconstruction,reconstruction_and_visible}.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import matplotlib
import pytorch_lightning as pl
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from innerssl.batches import SSL_VAL_DATALOADER_INDEX  # noqa: E402
from innerssl.ssl.base import ssl_views  # noqa: E402

CHECKS_FOLDER = "mae_checks"
PANELS = ("original", "masked", "reconstruction", "reconstruction_and_visible")
"""Panel names, left to right (BiaPy's file names for MAE outputs)."""
TITLES = ("original", "masked", "reconstruction", "reconstruction + visible")
MASK_SEED = 0
"""Seed of the masks in the pictures: the same patches are hidden at every epoch."""


class Reconstructs(Protocol):
    """What the callback needs of the module (innerssl.ssl.mae.MAE)."""

    device: torch.device
    training: bool

    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


def check_due(epoch: int, every_n_epochs: int, max_epochs: int | None) -> bool:
    """Whether epoch index ``epoch`` (0-based) gets pictures: every n-th epoch done, and the last."""
    if every_n_epochs <= 0:
        return False
    last = max_epochs is not None and max_epochs > 0 and epoch == max_epochs - 1
    return (epoch + 1) % every_n_epochs == 0 or last


def display_range(image: np.ndarray) -> tuple[float, float]:
    """(low, high) of an original image: every panel of its row is shown on this scale (normalised inputs)."""
    low, high = float(image.min()), float(image.max())
    return (low, high) if high > low else (low, low + 1.0)


def to_display(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """(C, H, W) values to an (H, W) grey or (H, W, 3) colour picture in [0, 1]."""
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    if scaled.shape[0] == 1:
        return scaled[0]
    if scaled.shape[0] == 3:
        return np.transpose(scaled, (1, 2, 0))
    return scaled.mean(axis=0)  # other channel counts: their mean, in grey


def write_checks(folder: Path, name: str, rows: list[list[np.ndarray]]) -> Path:
    """The grid ``<folder>/<name>.png`` of ``rows`` (one list of (C, H, W) panels per image, in PANELS order)
    and each panel alone under ``<folder>/<name>/``; returns the grid's path."""
    panel_folder = folder / name
    panel_folder.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(len(rows), len(PANELS), figsize=(2.2 * len(PANELS), 2.2 * len(rows)), squeeze=False)
    for index, panels in enumerate(rows):
        low, high = display_range(panels[0])
        for column, (panel, panel_name) in enumerate(zip(panels, PANELS)):
            picture = to_display(panel, low, high)
            grey = picture.ndim == 2
            axis = axes[index][column]
            axis.imshow(picture, cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if index == 0:
                axis.set_title(TITLES[column], fontsize=9)
            plt.imsave(
                panel_folder / f"image_{index}_{panel_name}.png", picture, cmap="gray" if grey else None, vmin=0, vmax=1
            )
    figure.suptitle(name.replace("_", " "), fontsize=10)
    figure.tight_layout()
    target = folder / f"{name}.png"
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


class MAEChecks(pl.Callback):
    """Writes the mae_checks pictures of a module with ``reconstruct(images, generator)`` (MAE)."""

    def __init__(self, every_n_epochs: int, num_images: int) -> None:
        super().__init__()
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.images: torch.Tensor | None = None
        """The pictured images (CPU), kept from the first SSL validation batch."""
        self.written: list[Path] = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.images is not None or dataloader_idx != SSL_VAL_DATALOADER_INDEX or not trainer.is_global_zero:
            return
        self.images = ssl_views(batch)[0][: self.num_images].detach().cpu().clone()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning validates at the end of an epoch before this hook: epoch 0's images are already kept.
        if not trainer.is_global_zero or self.images is None:
            return
        epoch = trainer.current_epoch
        if check_due(epoch, self.every_n_epochs, trainer.max_epochs):
            self.write(Path(trainer.default_root_dir) / CHECKS_FOLDER, epoch, pl_module)

    def write(self, folder: Path, epoch: int, module: Reconstructs) -> Path:
        """Reconstruct the kept images (eval mode, fixed masks) and write epoch ``epoch``'s pictures."""
        assert self.images is not None
        was_training = module.training
        module.train(False)
        try:
            with torch.no_grad():
                generator = torch.Generator().manual_seed(MASK_SEED)
                result = module.reconstruct(self.images.to(module.device), generator=generator)
        finally:
            module.train(was_training)
        columns = [self.images, result.masked, result.reconstruction, result.pasted]
        arrays = [column.detach().float().cpu().numpy() for column in columns]
        rows = [[array[index] for array in arrays] for index in range(len(self.images))]
        target = write_checks(folder, f"epoch_{epoch:03d}", rows)
        self.written.append(target)
        return target
