"""``aug/``: a few training images beside their augmented views exactly as the model receives them.

Users choose augmentations by looking. For each training stream of a run (the SSL views, the linear head's or
the classifier's augmentation) the first images of the training split go through that stream's own transform
(the batched augmentation on the training device, or the per-sample pipeline), and a PNG grid shows each
stored image with its views. The random streams are left as they were: the training draws the same
augmentations with or without the previews.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from innerssl.data.pipeline import ImageStream  # noqa: E402

logger = logging.getLogger(__name__)

AUGMENTATION_FOLDER = "aug"
PREVIEW_IMAGES = 8


@dataclass(frozen=True)
class StreamPreview:
    """One training stream to show: its name (the PNG's), its augmentation, and the stored training images."""

    name: str
    stream: ImageStream
    dataset: Dataset


def as_float(image: torch.Tensor) -> torch.Tensor:
    """A stored image (uint8 / uint16 / float) as float in [0, 1]."""
    if image.dtype == torch.uint8:
        return image.float() / 255
    if image.dtype in (torch.uint16, torch.int32) or not image.is_floating_point():
        return image.float() / 65535
    return image.float()


def first_images(dataset: Dataset, count: int) -> list[int]:
    """Indices of the first ``count`` readable items (bad files are None or, in a cache, marked)."""
    indices = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        if len(indices) == count:
            break
        if dataset[index] is not None:
            indices.append(index)
    return indices


def augmented_views(preview: StreamPreview, indices: list[int], device: torch.device) -> list[list[torch.Tensor]]:
    """Per image: its views (one, or SSL's two), as the model receives them, on the CPU."""
    stream = preview.stream
    if stream.batched is not None:
        images = torch.stack([preview.dataset[i][0] for i in indices]).to(device)
        generator = stream.batched.generator(images.device)
        state = generator.get_state()
        try:
            output = stream.to_encoder(images)
        finally:
            generator.set_state(state)
        views = list(output) if isinstance(output, tuple) else [output]
        return [[view[i].cpu() for view in views] for i in range(len(indices))]
    loader_dataset = stream.loader_dataset(preview.dataset)
    per_image = []
    with torch.random.fork_rng(devices=[]):
        for index in indices:
            output, _label = loader_dataset[index]
            per_image.append([view.cpu() for view in output] if isinstance(output, (tuple, list)) else [output.cpu()])
    return per_image


def show(axis: plt.Axes, image: torch.Tensor) -> None:
    channels = image.shape[0]
    pixels = image.clamp(0, 1)
    if channels == 3:
        axis.imshow(pixels.permute(1, 2, 0).numpy())
    else:
        axis.imshow(pixels[0].numpy(), cmap="gray", vmin=0, vmax=1)
    axis.set_xticks([])
    axis.set_yticks([])


def write_preview(
    preview: StreamPreview, folder: Path, device: torch.device, count: int = PREVIEW_IMAGES
) -> Path | None:
    """Write ``<folder>/<name>.png``; None when the training split has no readable image."""
    indices = first_images(preview.dataset, count)
    if not indices:
        return None
    views = augmented_views(preview, indices, device)
    columns = 1 + max(len(v) for v in views)
    figure, axes = plt.subplots(len(indices), columns, figsize=(1.6 * columns, 1.6 * len(indices)), squeeze=False)
    for row, (index, image_views) in enumerate(zip(indices, views)):
        show(axes[row][0], as_float(preview.dataset[index][0]))
        for column, view in enumerate(image_views, start=1):
            show(axes[row][column], view)
        for column in range(1 + len(image_views), columns):
            axes[row][column].axis("off")
    axes[0][0].set_title("stored", fontsize=8)
    for column in range(1, columns):
        axes[0][column].set_title(f"view {column}" if columns > 2 else "augmented", fontsize=8)
    where = "batched, on " + device.type if preview.stream.on_device else "per sample, in the loader"
    figure.suptitle(f"{preview.name}: training images and what the model receives ({where})", fontsize=9)
    figure.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{preview.name}.png"
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


def write_previews(previews: list[StreamPreview], folder: Path, device: torch.device) -> list[Path]:
    written = [path for preview in previews if (path := write_preview(preview, folder, device)) is not None]
    if written:
        logger.info("Augmented training images: %s", ", ".join(str(path) for path in written))
    return written


class AugmentationPreviews(pl.Callback):
    """Writes the previews once training starts (global rank 0), on the training device."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or datamodule is None or not hasattr(datamodule, "stream_previews"):
            return
        write_previews(previews_of(datamodule), self.folder, pl_module.device)


def previews_of(datamodule: pl.LightningDataModule) -> list[StreamPreview]:
    """The training streams of an innerssl datamodule (``stream_previews()``: name, stream, stored train split)."""
    return [StreamPreview(name, stream, dataset) for name, stream, dataset in datamodule.stream_previews()]
