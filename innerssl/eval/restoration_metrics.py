"""Image restoration metrics (PSNR, SSIM, MAE, MSE) and Dice, per image, as BiaPy reports them for its
crappify / masking pretext tasks and for segmentation.

Images are channel-first, ``(C, y, x)`` or ``(C, z, y, x)``. Conventions, decided once so every table agrees:

- PSNR of a prediction equal to its target (MSE 0) is ``inf`` (torchmetrics' value, not capped): a cap would be
  an invented number. An epoch mean with one such image is ``inf`` too; NaN (an empty mask) is left out of means.
- A ``(low, high)`` data range (zero-mean images) clamps prediction and target to it for PSNR and SSIM, as
  torchmetrics does; MAE and MSE always use the raw values.
- SSIM uses a gaussian window of 11 (sigma 1.5, torchmetrics' default) per spatial axis, reduced on small
  images to the largest odd size that fits the axis (at least 3; sigma scaled to ``0.15 * (size - 1)``), so
  a 7-slice volume gets a 3D SSIM with a 7-slice window instead of an error. Length-1 axes are dropped
  (a one-slice volume is scored as 2D); an image with fewer than 2 axes longer than 1 has NaN SSIM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from innerssl.data.normalisation import Normalisation

RESTORATION_METRICS = ("psnr", "ssim", "mae", "mse")
DataRange = float | tuple[float, float]
SSIM_WINDOW = 11
"""torchmetrics' default gaussian window (sigma 1.5); smaller axes get the largest odd window that fits."""
MIN_SSIM_WINDOW = 3
UNIT_RANGE_MODES = ("div", "percentile")
"""Normalisations (innerssl.data.normalisation.MODES) whose images lie in [0, 1]."""
IMAGE_NAME = "image_{index}"
"""Name of an image added without one: its position in the epoch."""


def ssim_window(size: int) -> int:
    """The gaussian window along an axis of ``size`` pixels: 11, or the largest odd size <= ``size``, at least 3."""
    window = min(SSIM_WINDOW, size if size % 2 else size - 1)
    return max(window, MIN_SSIM_WINDOW)


def ssim_sigma(window: int) -> float:
    """The sigma whose torchmetrics gaussian window is ``window`` long (1.5 for 11, as torchmetrics' default)."""
    return 0.15 * (window - 1)


def image_ssim(prediction: Tensor, target: Tensor, data_range: DataRange) -> float:
    """SSIM of one image ``(C, *spatial)`` with windows fitted to its size (see the module docstring)."""
    keep = [axis for axis, size in enumerate(target.shape[1:], start=1) if size > 1]
    if len(keep) < 2:
        return math.nan
    shape = (1, target.shape[0], *(target.shape[axis] for axis in keep))
    windows = [ssim_window(size) for size in shape[2:]]
    value = structural_similarity_index_measure(
        prediction.reshape(shape),
        target.reshape(shape),
        gaussian_kernel=True,
        sigma=[ssim_sigma(window) for window in windows],
        kernel_size=windows,
        data_range=data_range,
    )
    return float(value)


def image_metrics(
    prediction: Tensor, target: Tensor, data_range: DataRange, mask: Tensor | None = None
) -> dict[str, float]:
    """PSNR (dB), SSIM, MAE and MSE of one image ``(C, *spatial)`` (2D or 3D) against its target.

    ``mask`` (``(1 or C, *spatial)`` bool, True = counted) restricts PSNR, MAE and MSE to those pixels, e.g. the
    masked patches of a masked autoencoder; SSIM, a windowed measure, is always over the whole image. A mask
    with no True pixel gives NaN for those three. PSNR is ``inf`` when the counted pixels are equal.
    """
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
    if target.ndim not in (3, 4):
        raise ValueError(f"expected one image (C, y, x) or (C, z, y, x), got shape {tuple(target.shape)}")
    prediction, target = prediction.detach().float(), target.detach().float()
    data_range = _plain_range(data_range)
    ssim = image_ssim(prediction, target, data_range)
    if mask is not None:
        if mask.shape[1:] != target.shape[1:] or mask.shape[0] not in (1, target.shape[0]):
            raise ValueError(f"mask {tuple(mask.shape)} does not fit images {tuple(target.shape)}: (1 or C, *spatial)")
        counted = mask.to(device=target.device, dtype=torch.bool).expand_as(target)
        prediction, target = prediction[counted], target[counted]
        if target.numel() == 0:
            return {"psnr": math.nan, "ssim": ssim, "mae": math.nan, "mse": math.nan}
    difference = prediction - target
    return {
        "psnr": float(peak_signal_noise_ratio(prediction, target, data_range=data_range)),
        "ssim": ssim,
        "mae": float(difference.abs().mean()),
        "mse": float(difference.square().mean()),
    }


def data_range_of(normalisation: str | Normalisation, target: Tensor) -> DataRange:
    """The data range PSNR and SSIM need for a target normalised with ``normalisation`` (--normalisation).

    ``div`` and ``percentile`` images lie in [0, 1]: 1.0 (``div`` of signed integers gives about [-1, 1]: (-1, 1)).
    ``zero_mean_unit_variance`` images have no fixed range: the target's own (min, max), width 1 if constant.
    """
    mode = normalisation.mode if isinstance(normalisation, Normalisation) else Normalisation.parse(normalisation).mode
    low, high = float(target.min()), float(target.max())
    if mode in UNIT_RANGE_MODES:
        return 1.0 if low >= 0 or mode == "percentile" else (-1.0, 1.0)
    return (low, high) if high > low else (low, low + 1.0)


class RestorationMetrics:
    """Per-image restoration metrics of an epoch, and their means.

    A plain accumulator of this process's images: under DDP the Lightning module logs :meth:`compute`'s means
    with ``sync_dist=True``, which averages the processes' means. ``prefix`` names the keys (``input_`` for the
    degraded input's or mean-filled baseline's metrics, so their rows merge with the restored ones by name).
    """

    def __init__(self, spatial_dims: int, prefix: str = "") -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims = spatial_dims
        self.prefix = prefix
        self._rows: list[dict[str, float | str]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def reset(self) -> None:
        self._rows = []

    def update(
        self,
        prediction: Tensor,
        target: Tensor,
        data_range: DataRange | list[DataRange],
        mask: Tensor | None = None,
        name: str | Sequence[str] | None = None,
    ) -> None:
        """Add a batch ``(N, C, *spatial)`` or one image ``(C, *spatial)``.

        ``data_range``: one for all images, or a list with one per image (zero-mean images each have their own);
        ``mask``: ``(N, 1 or C, *spatial)`` (or one image's); ``name``: one per image, else ``image_<k>``.
        """
        single = target.ndim == self.spatial_dims + 1
        if not single and target.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected (N, C, *spatial) or (C, *spatial) with {self.spatial_dims} spatial axes, "
                f"got shape {tuple(target.shape)}"
            )
        if single:
            prediction, target = prediction[None], target[None]
            mask = None if mask is None else mask[None]
        count = target.shape[0]
        ranges = data_range if isinstance(data_range, list) else [data_range] * count
        names = [name] if isinstance(name, str) else name
        if len(ranges) != count or (names is not None and len(names) != count):
            raise ValueError(f"{count} images need {count} data ranges and names, got {len(ranges)} and {names}")
        for index in range(count):
            image_mask = None if mask is None else mask[index]
            metrics = image_metrics(prediction[index], target[index], ranges[index], image_mask)
            label = names[index] if names is not None else IMAGE_NAME.format(index=len(self._rows))
            self._rows.append({"name": label, **{self.prefix + key: value for key, value in metrics.items()}})

    def per_image(self) -> list[dict[str, float | str]]:
        """One dict per image added since the last reset, in order: ``name`` and the (prefixed) metrics."""
        return [dict(row) for row in self._rows]

    def compute(self) -> dict[str, float]:
        """The mean of each metric over the images (NaN left out; ``inf`` PSNR kept); {} when none was added."""
        if not self._rows:
            return {}
        keys = [self.prefix + key for key in RESTORATION_METRICS]
        return {key: nan_mean([float(row[key]) for row in self._rows]) for key in keys}


def nan_mean(values: Sequence[float]) -> float:
    """Mean of the non-NaN values (``inf`` stays ``inf``); NaN when all are NaN."""
    kept = [value for value in values if not math.isnan(value)]
    return float(np.mean(kept)) if kept else math.nan


def dice_per_class(
    prediction_labels: Tensor, target_labels: Tensor, num_classes: int, include_background: bool = False
) -> dict[int, float]:
    """Dice ``2|A∩B| / (|A| + |B|)`` per class of integer label maps ``(*spatial)`` or a batch ``(N, *spatial)``.

    A batch is pooled (all its pixels count as one set per class). A class absent from both prediction and
    target is NaN, not 1 or 0: nothing was there to find, so it says nothing (:func:`mean_dice` skips it).
    Class 0 (background) is left out unless ``include_background``.
    """
    if prediction_labels.shape != target_labels.shape:
        raise ValueError(
            f"prediction {tuple(prediction_labels.shape)} and target {tuple(target_labels.shape)} differ in shape"
        )
    if prediction_labels.is_floating_point() or target_labels.is_floating_point():
        raise ValueError("dice_per_class needs integer label maps, not floats: take the argmax of the logits first")
    prediction, target = prediction_labels.detach().long().flatten(), target_labels.detach().long().flatten()
    for labels in (prediction, target):
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
    predicted = torch.bincount(prediction, minlength=num_classes)
    actual = torch.bincount(target, minlength=num_classes)
    overlap = torch.bincount(target[prediction == target], minlength=num_classes)
    result = {}
    for label in range(0 if include_background else 1, num_classes):
        total = int(predicted[label] + actual[label])
        result[label] = 2 * int(overlap[label]) / total if total else math.nan
    return result


def mean_dice(per_class: dict[int, float]) -> float:
    """The mean Dice over the classes present (NaN ones left out); NaN when none is."""
    return nan_mean(list(per_class.values()))


def _plain_range(data_range: DataRange) -> DataRange:
    """Python floats (torchmetrics clamps with them; tensors from ``.min()`` would keep a device)."""
    if isinstance(data_range, tuple):
        low, high = (float(value) for value in data_range)
        if not high > low:
            raise ValueError(f"a data range (low, high) needs high > low, got {data_range}")
        return (low, high)
    if not float(data_range) > 0:
        raise ValueError(f"a data range must be positive, got {data_range}")
    return float(data_range)
