"""Pictures of the restoration pretext tasks: BiaPy's ``mae_checks/`` files and the ``aug/`` preview grid.

``mae_checks/[epoch_<NNN>/]<name>_{original,masked,reconstruction,reconstruction_and_visible}`` are BiaPy's
file names for a masked autoencoder's outputs. TIFF (and ``.npy``) data gets float32 TIFFs of the whole image
or volume (:mod:`innerssl.outputs.per_image`), to measure in Fiji; other data gets PNGs, of the middle z slice
for 3D, all four on the original's scale so they compare by eye. The ``aug/`` preview shows what a
restoration network is trained on: per image its network input (crappified or masked) beside its target.
``slices/epoch_<NNN>/<name>.png`` (tasks without mae_checks, e.g. MONAI's ViT autoencoder) shows a few axial
slices of a validation image: per row one slice, as original | network input | restoration.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from innerssl.data.biapy_layout import NUMPY_SUFFIXES  # noqa: E402
from innerssl.data.image_io import TIFF_SUFFIXES  # noqa: E402
from innerssl.outputs.per_image import PNG_SUFFIX, TIFF_SUFFIX, normalised_suffix, write_image  # noqa: E402

MAE_CHECKS_FOLDER = "mae_checks"
MAE_PANELS = ("original", "masked", "reconstruction", "reconstruction_and_visible")
"""BiaPy's file name endings for a masked autoencoder's outputs, in column order."""
PREVIEW_COLUMNS = ("network input", "target")
SLICES_FOLDER = "slices"
NUM_SLICES = 3
EPOCH_FOLDER = "epoch_{epoch:03d}"
"""Per-epoch subfolder; NNN is the trainer's 0-based epoch index, as in metrics.csv and mae_checks.py."""

Image = torch.Tensor | np.ndarray


def middle_slice(image: Image) -> np.ndarray:
    """A 2D view ``(C, y, x)`` of an image ``(C, y, x)`` (itself) or ``(C, z, y, x)`` (its middle z slice)."""
    array = _as_numpy(image)
    if array.ndim == 3:
        return array
    if array.ndim == 4:
        return array[:, array.shape[1] // 2]
    raise ValueError(f"expected an image (C, y, x) or (C, z, y, x), got shape {tuple(array.shape)}")


def reconstruction_and_visible(original: Image, reconstruction: Image, mask_pixels: Image) -> np.ndarray:
    """The reconstruction where ``mask_pixels`` (True = masked) and the original where visible."""
    mask = _as_numpy(mask_pixels).astype(bool)
    return np.where(mask, _as_numpy(reconstruction), _as_numpy(original)).astype(np.float32)


def write_mae_checks(
    folder: Path,
    name: str,
    original: Image,
    masked: Image,
    reconstruction: Image,
    mask_pixels: Image,
    source_suffix: str,
    spatial_dims: int,
    epoch: int | None = None,
) -> list[Path]:
    """Write one image's four MAE panels (``(C, *spatial)`` each; ``mask_pixels`` ``(1, *spatial)``, True = masked)
    under ``folder`` or, with ``epoch``, ``folder/epoch_<NNN>/``. Returns the paths in MAE_PANELS order."""
    panels = [_as_numpy(panel).astype(np.float32) for panel in (original, masked, reconstruction)]
    if any(panel.shape != panels[0].shape for panel in panels) or panels[0].ndim != spatial_dims + 1:
        raise ValueError(
            f"original, masked and reconstruction must share one (C, *spatial) shape with {spatial_dims} spatial "
            f"axes, got {[tuple(panel.shape) for panel in panels]}"
        )
    panels.append(reconstruction_and_visible(panels[0], panels[2], mask_pixels))
    target = Path(folder) / EPOCH_FOLDER.format(epoch=epoch) if epoch is not None else Path(folder)
    as_tiff = normalised_suffix(source_suffix) in (*TIFF_SUFFIXES, *NUMPY_SUFFIXES)
    if as_tiff:
        return [
            write_image(panel, target, f"{name}_{panel_name}", TIFF_SUFFIX, spatial_dims)
            for panel, panel_name in zip(panels, MAE_PANELS)
        ]
    low, high = _display_range(middle_slice(panels[0]))
    return [
        write_image(middle_slice(panel), target, f"{name}_{panel_name}", PNG_SUFFIX, 2, display_range=(low, high))
        for panel, panel_name in zip(panels, MAE_PANELS)
    ]


def write_restoration_preview(path: Path, inputs: Image, targets: Image, title: str, max_images: int = 8) -> Path:
    """One PNG grid at ``path``: per row an image's network input beside its target (``(N, C, *spatial)`` each;
    3D: the middle z slice; grey for one channel, RGB for three, else the first channel). Returns ``path``."""
    sources, goals = _as_numpy(inputs), _as_numpy(targets)
    if sources.shape[0] != goals.shape[0] or sources.ndim not in (4, 5) or goals.ndim != sources.ndim:
        raise ValueError(
            f"inputs {tuple(sources.shape)} and targets {tuple(goals.shape)} must be batches (N, C, *spatial) "
            "of one length"
        )
    count = min(sources.shape[0], max_images)
    if count < 1:
        raise ValueError("a restoration preview needs at least one image")
    figure, axes = plt.subplots(count, len(PREVIEW_COLUMNS), figsize=(4.4, 2.2 * count), squeeze=False)
    for row in range(count):
        pair = [middle_slice(sources[row]), middle_slice(goals[row])]
        low, high = _display_range(pair[1], pair[0])
        for column, (image, heading) in enumerate(zip(pair, PREVIEW_COLUMNS)):
            _draw_panel(axes[row][column], _to_picture(image, low, high), heading if row == 0 else None)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save_png(figure, Path(path))


def slice_positions(depth: int, count: int = NUM_SLICES) -> list[int]:
    """``count`` axial (z) slice indices spread evenly inside ``depth`` (at 1/(count+1), 2/(count+1), ...),
    distinct; fewer where the volume has fewer slices."""
    return sorted({min(depth - 1, (depth * (index + 1)) // (count + 1)) for index in range(count)})


def write_slice_picture(
    path: Path, title: str, columns: dict[str, Image], spatial_dims: int, num_slices: int = NUM_SLICES
) -> Path:
    """One PNG at ``path``: per row an axial slice (3D: ``num_slices`` of them, 2D: the image), per column one of
    ``columns`` (heading -> ``(C, *spatial)``, all one shape), on the first column's scale. Returns ``path``."""
    panels = {heading: _as_numpy(image).astype(np.float32) for heading, image in columns.items()}
    shapes = {panel.shape for panel in panels.values()}
    first = next(iter(panels.values()))
    if len(shapes) != 1 or first.ndim != spatial_dims + 1:
        raise ValueError(f"slice picture panels must share one (C, *spatial) shape, got {sorted(shapes)}")
    rows = slice_positions(first.shape[1], num_slices) if spatial_dims == 3 else [None]
    low, high = _display_range(first)
    figure, axes = plt.subplots(len(rows), len(panels), figsize=(2.2 * len(panels), 2.2 * len(rows)), squeeze=False)
    for row, depth in enumerate(rows):
        for column, (heading, panel) in enumerate(panels.items()):
            picture = _to_picture(panel if depth is None else panel[:, depth], low, high)
            _draw_panel(axes[row][column], picture, heading if row == 0 else None)
            if column == 0 and depth is not None:
                axes[row][column].set_ylabel(f"z = {depth}", fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save_png(figure, Path(path))


def _draw_panel(axis: plt.Axes, picture: np.ndarray, heading: str | None) -> None:
    axis.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    if heading is not None:
        axis.set_title(heading, fontsize=9)


def _save_png(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix or PNG_SUFFIX}")
    try:
        figure.savefig(partial, dpi=100, format="png")
        os.replace(partial, path)
    finally:
        plt.close(figure)
        partial.unlink(missing_ok=True)
    return path


def _as_numpy(image: Image) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        return image.detach().float().cpu().numpy()
    return np.asarray(image)


def _display_range(image: np.ndarray, *others: np.ndarray) -> tuple[float, float]:
    """[0, 1] for images within it (the normalised scale), else ``image``'s own (min, max) (zero-mean data)."""
    low, high = float(image.min()), float(image.max())
    if low >= 0 and high <= 1 and all(other.min() >= 0 and other.max() <= 1 for other in others):
        return 0.0, 1.0
    return (low, high) if high > low else (low, low + 1.0)


def _to_picture(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """(C, y, x) -> (y, x) grey or (y, x, 3) colour in [0, 1]; channel counts other than 1 and 3: the first."""
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    return np.transpose(scaled, (1, 2, 0)) if scaled.shape[0] == 3 else scaled[0]
