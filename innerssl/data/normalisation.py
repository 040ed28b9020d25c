"""Intensity normalisation of channel-first images (C, *spatial), as BiaPy's options name it (--normalisation):

- ``div``: divide by the type's maximum (uint8 by 255, uint16 by 65535, bool by 1), so one intensity means the
  same in every image. Signed integers are divided by their positive maximum (int16 by 32767), giving about
  [-1, 1]. Floats have no type maximum: they pass through when already within [0, 1] (e.g. PNG / DICOM that
  innerssl's readers decoded) or when the caller gives ``dtype_max`` (from :class:`ImageInfo`); other floats are
  refused with a UserError naming the flag, since dividing them by anything would be a guess.
- ``percentile``: per image and per channel, the low and high percentiles (--percentile_clip, default 0.5,99.5;
  numpy's linear interpolation) map to 0 and 1 and values outside are clipped to [0, 1].
- ``zero_mean_unit_variance``: per image and per channel, minus the mean, divided by the (population) standard
  deviation.

Degenerate channels never give NaN: a constant channel becomes all zeros in every mode but ``div`` (which does
not look at the image); with ``percentile``, a channel whose two percentiles are equal but which is not constant
(e.g. a few bright spots on a flat background) becomes 0 at or below that value and 1 above it, the limit of the
clipped scaling. The functions are pure: numpy arrays in, float32 numpy arrays out; torch tensors in, float32
tensors out on the same device. Statistics are computed in float64 (float32 on devices without it, e.g. MPS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
import torch

from innerssl.errors import UserError

Array = TypeVar("Array", np.ndarray, torch.Tensor)
Mode = Literal["div", "percentile", "zero_mean_unit_variance"]
MODES: tuple[Mode, ...] = ("div", "percentile", "zero_mean_unit_variance")
NORMALISATION_FLAG = "--normalisation"
PERCENTILE_FLAG = "--percentile_clip"
DEFAULT_PERCENTILE_CLIP = (0.5, 99.5)


def type_max(dtype: np.dtype | torch.dtype) -> float | None:
    """The value that means full intensity for an integer or bool dtype; None for floats (they have none)."""
    if isinstance(dtype, torch.dtype):
        if dtype == torch.bool:
            return 1.0
        return None if dtype.is_floating_point or dtype.is_complex else float(torch.iinfo(dtype).max)
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return 1.0
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else None


def divide_by_type_max(image: Array, dtype_max: float | None = None) -> Array:
    """``image`` / its type's maximum (or ``dtype_max`` where given) as float32; see the module docstring."""
    scale = dtype_max if dtype_max is not None else type_max(image.dtype)
    if scale is None:
        low, high = (float(value) for value in _min_max(image))
        if low < 0 or high > 1:
            raise UserError(
                f"{NORMALISATION_FLAG}=div divides by the pixel type's maximum, but these float images have no type "
                f"maximum and hold values in [{low:g}, {high:g}], outside [0, 1]: use {NORMALISATION_FLAG}=percentile "
                "or zero_mean_unit_variance"
            )
        scale = 1.0
    if scale <= 0:
        raise ValueError(f"dtype_max must be positive, got {scale}")
    return _to_float32(image) / scale


def percentile_scale(image: Array, low: float, high: float) -> Array:
    """Per channel: the ``low`` / ``high`` percentiles (0-100) map to 0 / 1, clipped to [0, 1]; float32."""
    _check_percentiles(low, high)
    values = _flat_stats_input(image)
    if isinstance(values, torch.Tensor):
        lows, highs = _torch_percentiles(values, low, high)
    else:
        lows, highs = np.percentile(values, [low, high], axis=1)
    span = highs - lows
    flat = highs <= lows  # equal percentiles: the limit of the clipped scaling is a step at that value
    safe_span = span + flat  # 1 where flat, so nothing divides by zero
    shape = (-1,) + (1,) * (image.ndim - 1)
    scaled = (values.reshape(image.shape) - lows.reshape(shape)) / safe_span.reshape(shape)
    if isinstance(scaled, torch.Tensor):
        scaled = torch.where(flat.reshape(shape), (scaled > 0).to(scaled.dtype), scaled).clamp_(0, 1)
        return scaled.to(torch.float32)
    scaled = np.where(flat.reshape(shape), (scaled > 0).astype(scaled.dtype), scaled)
    return np.clip(scaled, 0, 1).astype(np.float32)


def zero_mean_unit_variance(image: Array) -> Array:
    """Per channel: (x - mean) / std as float32; a constant channel (max == min) becomes all zeros."""
    values = _flat_stats_input(image)
    if isinstance(values, torch.Tensor):
        mean = values.mean(dim=1, keepdim=True)
        std = values.std(dim=1, keepdim=True, correction=0)
        constant = values.amax(dim=1, keepdim=True) == values.amin(dim=1, keepdim=True)
        centred = torch.where(constant, torch.zeros_like(values), (values - mean) / torch.where(constant, 1, std))
        return centred.reshape(image.shape).to(torch.float32)
    mean = values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    constant = values.max(axis=1, keepdims=True) == values.min(axis=1, keepdims=True)
    centred = np.where(constant, 0.0, (values - mean) / np.where(constant, 1.0, std))
    return centred.reshape(image.shape).astype(np.float32)


@dataclass(frozen=True)
class Normalisation:
    """A normalisation mode and its percentiles (used by ``percentile`` only); call it on an image."""

    mode: Mode = "div"
    percentile_clip: tuple[float, float] = DEFAULT_PERCENTILE_CLIP

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"{NORMALISATION_FLAG}={self.mode} is not a normalisation: use one of {', '.join(MODES)}")
        _check_percentiles(*self.percentile_clip)

    @classmethod
    def parse(cls, mode: str, percentile_clip: str | None = None) -> Normalisation:
        """From the flags' strings: ``mode`` any case; ``percentile_clip`` 'low,high' (e.g. '0.5,99.5').

        An empty or None ``percentile_clip`` means the default; one given with a mode other than percentile
        is refused rather than ignored.
        """
        name = mode.strip().lower().replace("-", "_")
        if name not in MODES:
            raise UserError(f"{NORMALISATION_FLAG}={mode} is not a normalisation: use one of {', '.join(MODES)}")
        if percentile_clip is None or not percentile_clip.strip():
            return cls(name, DEFAULT_PERCENTILE_CLIP)  # type: ignore[arg-type]
        if name != "percentile":
            raise UserError(
                f"{PERCENTILE_FLAG}={percentile_clip} only applies to {NORMALISATION_FLAG}=percentile, not {name}: "
                f"drop {PERCENTILE_FLAG} or use {NORMALISATION_FLAG}=percentile"
            )
        parts = [part.strip() for part in percentile_clip.split(",")]
        try:
            low, high = (float(part) for part in parts)
        except ValueError:
            raise UserError(
                f"{PERCENTILE_FLAG}={percentile_clip} must be two percentiles 'low,high' with 0 <= low < high <= 100, "
                "e.g. 0.5,99.5"
            ) from None
        return cls(name, (low, high))  # type: ignore[arg-type]

    def __call__(self, image: Array, dtype_max: float | None = None) -> Array:
        """``image`` normalised; ``dtype_max`` (from the reader's ImageInfo) is used by ``div`` only."""
        if self.mode == "div":
            return divide_by_type_max(image, dtype_max)
        if self.mode == "percentile":
            return percentile_scale(image, *self.percentile_clip)
        return zero_mean_unit_variance(image)


def _check_percentiles(low: float, high: float) -> None:
    if not (0 <= low < high <= 100):  # also refuses NaN
        raise UserError(
            f"{PERCENTILE_FLAG}={low:g},{high:g} must be two percentiles 'low,high' with 0 <= low < high <= 100, "
            "e.g. 0.5,99.5"
        )


def _to_float32(image: Array) -> Array:
    if isinstance(image, torch.Tensor):
        return image.to(torch.float32)
    return np.asarray(image, dtype=np.float32)


def _min_max(image: Array) -> tuple[float, float]:
    if isinstance(image, torch.Tensor):
        return float(image.min()), float(image.max())
    return float(np.min(image)), float(np.max(image))


def _flat_stats_input(image: Array) -> Array:
    """(C, N) in the statistics dtype: float64, or float32 on torch devices without float64."""
    if image.ndim < 2:
        raise ValueError(f"expected a channel-first image (C, *spatial), got shape {tuple(image.shape)}")
    if isinstance(image, torch.Tensor):
        dtype = torch.float32 if image.device.type == "mps" else torch.float64
        return image.reshape(image.shape[0], -1).to(dtype)
    return np.asarray(image, dtype=np.float64).reshape(image.shape[0], -1)


def _torch_percentiles(values: torch.Tensor, low: float, high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row percentiles with numpy's linear interpolation; sorting, since torch.quantile caps the input size."""
    ordered = values.sort(dim=1).values
    last = ordered.shape[1] - 1
    result = []
    for percentile in (low, high):
        position = percentile / 100 * last
        below, above = int(np.floor(position)), int(np.ceil(position))
        weight = position - below
        result.append(ordered[:, below] + (ordered[:, above] - ordered[:, below]) * weight)
    return result[0], result[1]
