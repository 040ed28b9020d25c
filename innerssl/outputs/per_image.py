"""Per-image test outputs in the run folder's ``per_image/``: restored images, label maps and metric tables.

Each output is written in a format the user's own tools open beside the source image, chosen by the source's
suffix (BiaPy writes its outputs the same way):

- TIFF (``.tif`` / ``.tiff``) and ``.npy`` sources: a float32 ``.tif``. 2D: ``(y, x)``, or ``(y, x, c)`` with the
  channels as samples per pixel. 3D: an ImageJ hyperstack, ``(z, y, x)`` or ``(z, c, y, x)`` (ImageJ stores
  channels before y and x), so Fiji opens a stack with slices and channels.
- NIfTI sources: ``.nii.gz`` with the reference image's affine (identity without one). innerssl reads NIfTI
  voxel axes ``(i, j, k)`` as ``(z, y, x) = (k, j, i)``; the writer inverts that, so the output overlays its
  source voxel for voxel. Channels go on the 4th axis; a 2D image is one slice (k = 1).
- Other (PNG / JPEG / BMP / DICOM) 2D sources: PNG, 8-bit (``png_bits=16``: 16-bit for one channel), grey for
  one channel, RGB for three, values clipped to ``display_range`` (default [0, 1]) and scaled. Other channel
  counts, and 3D images from such sources, are written as TIFF instead: PNG cannot hold them.

Every file is written to a temporary name beside its target and renamed into place, so a reader (or a
killed run) never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import tifffile
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from innerssl.data.biapy_layout import NIFTI_SUFFIXES, NUMPY_SUFFIXES  # noqa: E402
from innerssl.data.image_io import TIFF_SUFFIXES  # noqa: E402

PER_IMAGE_FOLDER = "per_image"
TIFF_SUFFIX = ".tif"
NIFTI_SUFFIX = ".nii.gz"
PNG_SUFFIX = ".png"
PNG_CHANNELS = (1, 3)
PNG_BITS = (8, 16)
NAME_COLUMN = "name"
MEAN_ROW_NAME = "mean"
METRIC_TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "mae": "MAE", "mse": "MSE"}


def normalised_suffix(source_suffix: str) -> str:
    """'.TIF' / 'tif' / 'a.nii.gz' -> '.tif' / '.tif' / '.nii.gz': lower case, with its dot."""
    lower = "." + source_suffix.lower().lstrip(".")
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return f".{lower.rpartition('.')[2]}"


def output_suffix(source_suffix: str, spatial_dims: int, channels: int = 1) -> str:
    """The suffix :func:`write_image` gives the output of an image read from a ``source_suffix`` file."""
    suffix = normalised_suffix(source_suffix)
    if suffix in NIFTI_SUFFIXES:
        return NIFTI_SUFFIX
    if suffix in (*TIFF_SUFFIXES, *NUMPY_SUFFIXES) or spatial_dims == 3 or channels not in PNG_CHANNELS:
        return TIFF_SUFFIX
    return PNG_SUFFIX


def write_image(
    array: torch.Tensor | np.ndarray,
    folder: Path,
    name: str,
    source_suffix: str,
    spatial_dims: int,
    reference: Path | None = None,
    display_range: tuple[float, float] | None = None,
    png_bits: int = 8,
    affine: np.ndarray | None = None,
) -> Path:
    """Write one float image ``(C, *spatial)`` as ``folder/<name><suffix>`` (format rules: module docstring).

    ``reference``: the source NIfTI whose affine the output takes (else ``affine``, voxel (i, j, k) -> world, else
    the identity); ``display_range``: the values that map to
    black and white in a PNG (TIFF and NIfTI keep the float values). Returns the written path.
    """
    image = _as_numpy(array).astype(np.float32)
    _check_shape(image.shape, spatial_dims + 1, spatial_dims, "an image (C, *spatial)")
    suffix = output_suffix(source_suffix, spatial_dims, image.shape[0])
    target = Path(folder) / f"{name}{suffix}"
    if suffix == NIFTI_SUFFIX:
        return _write_nifti(_nifti_voxels(image, spatial_dims), target, reference, affine)
    if suffix == TIFF_SUFFIX:
        return _atomic(target, lambda path: _write_float_tiff(image, path, spatial_dims))
    if png_bits not in PNG_BITS:
        raise ValueError(f"png_bits must be 8 or 16, got {png_bits}")
    low, high = display_range if display_range is not None else (0.0, 1.0)
    if not high > low:
        raise ValueError(f"display_range needs high > low, got {display_range}")
    scaled = np.clip((image - low) / (high - low), 0.0, 1.0)
    if image.shape[0] == 1 and png_bits == 16:
        picture = Image.fromarray(np.round(scaled[0] * 65535).astype(np.uint16))
    else:  # PIL has no 16-bit RGB: colour PNGs are 8-bit
        pixels = np.round(scaled * 255).astype(np.uint8)
        picture = Image.fromarray(pixels[0] if image.shape[0] == 1 else np.transpose(pixels, (1, 2, 0)))
    return _atomic(target, lambda path: picture.save(path, format="PNG"))


def write_label_map(
    labels: torch.Tensor | np.ndarray,
    folder: Path,
    name: str,
    source_suffix: str,
    spatial_dims: int,
    reference: Path | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write an integer label map ``(*spatial)`` as ``folder/<name><suffix>``, same suffix rules as :func:`write_image`.

    Stored in the smallest unsigned type that holds its labels (uint8, uint16, else uint32; a PNG is 8- or
    16-bit grey), so viewers show label values as they are. Returns the written path.
    """
    values = _as_numpy(labels)
    if values.dtype.kind not in "uib":
        raise ValueError(f"a label map holds integers, got {values.dtype}")
    _check_shape(values.shape, spatial_dims, spatial_dims, "a label map (*spatial)")
    if values.size and int(values.min()) < 0:
        raise ValueError(f"label maps hold labels >= 0, got {int(values.min())}")
    highest = int(values.max()) if values.size else 0
    dtype = next(dtype for dtype in (np.uint8, np.uint16, np.uint32) if highest <= np.iinfo(dtype).max)
    values = values.astype(dtype)
    suffix = output_suffix(source_suffix, spatial_dims)
    target = Path(folder) / f"{name}{suffix}"
    if suffix == NIFTI_SUFFIX:
        return _write_nifti(_nifti_voxels(values[None], spatial_dims), target, reference, affine)
    if suffix == PNG_SUFFIX and dtype != np.uint32:
        return _atomic(target, lambda path: Image.fromarray(values).save(path, format="PNG"))
    target = target.with_name(f"{name}{TIFF_SUFFIX}")
    imagej = spatial_dims == 3 and dtype != np.uint32  # ImageJ has no 32-bit integer stacks

    def write(path: Path) -> None:
        tifffile.imwrite(path, values, imagej=imagej, metadata={"axes": "ZYX"} if imagej else None)

    return _atomic(target, write)


def write_metrics_table(rows: list[dict], path: Path) -> Path:
    """``test_metrics.csv``: one row per image, ``name`` first, then every other key of the rows in first-seen order."""
    return _atomic(Path(path), lambda target: _table(rows).to_csv(target, index=False))


def mean_of_rows(rows: list[dict]) -> dict[str, float]:
    """The mean of each metric column of ``rows`` (NaN left out; ``inf`` kept), as :func:`write_mean_table` writes."""
    table = _table(rows).drop(columns=NAME_COLUMN)
    return {column: _column_mean(table[column]) for column in table.columns}


def write_mean_table(rows: list[dict], path: Path) -> Path:
    """``test_metrics_mean.csv``: one row named ``mean`` with each metric's mean over ``rows`` (see mean_of_rows)."""
    means = pd.DataFrame([{NAME_COLUMN: MEAN_ROW_NAME, **mean_of_rows(rows)}])
    return _atomic(Path(path), lambda target: means.to_csv(target, index=False))


def plot_metric_comparison(
    means: dict[str, float],
    baseline: dict[str, float],
    path: Path,
    title: str,
    label: str = "restored",
    baseline_label: str = "degraded input",
) -> Path:
    """A PNG bar chart, one panel per metric (psnr, ssim, mae, mse order), of ``means`` beside ``baseline``
    (the degraded input's or the mean-filled image's metrics), values printed on the bars. Returns ``path``.

    Metrics missing from either dict are left out; a non-finite value (``inf`` PSNR) is drawn as an empty bar
    labelled with its value.
    """
    metrics = [key for key in (*METRIC_TITLES, *means) if key in means and key in baseline]
    metrics = list(dict.fromkeys(metrics))
    figure, axes = plt.subplots(1, max(len(metrics), 1), figsize=(2.6 * max(len(metrics), 1), 3.4), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        values = [float(baseline[metric]), float(means[metric])]
        heights = [value if math.isfinite(value) else 0.0 for value in values]
        bars = axis.bar([baseline_label, label], heights, color=["tab:gray", "tab:blue"])
        for bar, value in zip(bars, values):
            axis.annotate(
                f"{value:.4g}",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        top = max((abs(height) for height in heights), default=0.0)
        axis.set_ylim(min(0.0, *heights) * 1.15, top * 1.15 if top > 0 else 1.0)
        axis.set_title(METRIC_TITLES.get(metric, metric), fontsize=9)
        axis.tick_params(axis="x", labelsize=8)
        axis.grid(axis="y", alpha=0.3)
    if not metrics:
        axes[0][0].set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()

    def save(target: Path) -> None:
        figure.savefig(target, dpi=100, format="png")

    try:
        return _atomic(Path(path), save)
    finally:
        plt.close(figure)


# --- helpers -----------------------------------------------------------------------------------------------------


def _as_numpy(array: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _check_shape(shape: Sequence[int], ndim: int, spatial_dims: int, what: str) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(shape) != ndim:
        raise ValueError(f"expected {what} with {spatial_dims} spatial axes, got shape {tuple(shape)}")


def _write_float_tiff(image: np.ndarray, path: Path, spatial_dims: int) -> None:
    """float32 TIFF: 2D channels-last samples, 3D an ImageJ hyperstack (module docstring)."""
    channels = image.shape[0]
    if spatial_dims == 3:
        stack, axes = (image[0], "ZYX") if channels == 1 else (np.transpose(image, (1, 0, 2, 3)), "ZCYX")
        tifffile.imwrite(path, np.ascontiguousarray(stack), imagej=True, metadata={"axes": axes})
    elif channels == 1:
        tifffile.imwrite(path, image[0], photometric="minisblack")
    else:
        pixels = np.ascontiguousarray(np.transpose(image, (1, 2, 0)))
        tifffile.imwrite(path, pixels, photometric="minisblack", planarconfig="contig")


def _nifti_voxels(image: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(C, [z,] y, x) -> NIfTI (i, j, k[, c]) = (x, y, z[, c]): the inverse of innerssl's reader."""
    volume = image if spatial_dims == 3 else image[:, None]  # a 2D image is one slice
    voxels = np.transpose(volume, (3, 2, 1, 0))
    return np.ascontiguousarray(voxels[..., 0] if voxels.shape[-1] == 1 else voxels)


def _write_nifti(voxels: np.ndarray, target: Path, reference: Path | None, affine: np.ndarray | None = None) -> Path:
    import nibabel

    if reference is not None:
        affine = nibabel.load(reference).affine  # type: ignore[attr-defined]
    affine = np.eye(4) if affine is None else affine
    image = nibabel.Nifti1Image(voxels, affine)
    image.set_data_dtype(voxels.dtype)
    return _atomic(target, lambda path: nibabel.save(image, path))


def _table(rows: list[dict]) -> pd.DataFrame:
    if any(NAME_COLUMN not in row for row in rows):
        raise ValueError(f"every metrics row needs a {NAME_COLUMN!r}")
    columns = list(dict.fromkeys([NAME_COLUMN, *(key for row in rows for key in row)]))
    return pd.DataFrame(rows, columns=columns)


def _column_mean(column: pd.Series) -> float:
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float)
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _atomic(target: Path, write: Callable[[Path], object]) -> Path:
    """Run ``write`` on a temporary file beside ``target`` (same suffix: writers choose formats by it), then
    rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = NIFTI_SUFFIX if target.name.endswith(NIFTI_SUFFIX) else target.suffix
    partial = target.with_name(f".{target.name[: len(target.name) - len(suffix)]}.{os.getpid()}.partial{suffix}")
    try:
        write(partial)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return target
