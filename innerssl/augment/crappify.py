"""BiaPy's "crappify" degradation for restoration pretext tasks: noise, then a lower resolution, 2D and 3D, batched.

A restoration network learns to undo a degradation, so the pretext task pairs each image with a "crappified"
copy: (a) Gaussian noise of standard deviation ``noise * maximum`` (BiaPy's ``--crappify_noise``, default 0.2),
(b) clipped to ``[0, maximum]``, (c) down-sampled along every spatial axis (z too in 3D) by ``1/sqrt(factor)``
(``--crappify_resizing_factor`` 2, 4 or 6, default 4: half the size per axis; the smaller size is
``floor(size / sqrt(factor))``, at least 1) and (d) up-sampled back to the original size, both with linear
interpolation.

**Maximum.** BiaPy takes ``maximum`` as each image's own maximum (before the noise), which :func:`crappify` does
with ``maximum=None``; the default 1.0 is the range of the images this platform normalises to [0, 1], and a
tensor gives one maximum per image (``(N,)``) or anything broadcastable to the batch.

**Interpolation.** The down-sampling is linear with antialiasing (the triangle filter widened by the scale, as
torch's ``antialias=True`` bilinear resize; BiaPy's own resize call was not available to compare): without it a
factor that is not 4 aliases fine structures instead of removing them (``antialias=False`` gives the plain one).
It is applied axis by axis as small resampling matrices, so 3D works too (torch antialiases only 2D). The
up-sampling is plain bilinear/trilinear (``align_corners=False``). Both are convex combinations, so the result
stays in ``[0, maximum]``.

Images are ``(N, C, *spatial)`` with 2 or 3 spatial axes, on any device; the noise comes only from ``generator``
(on the images' device) or torch's global generator, and nothing reads values back to the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor

from innerssl.errors import UserError

__all__ = [
    "RESIZING_FACTORS",
    "Crappify",
    "add_gaussian_noise",
    "check_crappify_settings",
    "crappify",
    "down_up_sample",
    "image_maximum",
    "linear_resize_matrix",
    "resize_linear",
]

RESIZING_FACTORS = (2, 4, 6)
"""BiaPy's allowed ``--crappify_resizing_factor`` values: the image's area (volume per axis pair) shrinks by it."""

UPSAMPLING_MODES = {2: "bilinear", 3: "trilinear"}


def check_crappify_settings(noise: float, resizing_factor: int) -> None:
    """User errors for ``--crappify_noise`` and ``--crappify_resizing_factor``."""
    try:
        valid = math.isfinite(float(noise)) and float(noise) >= 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise UserError(f"--crappify_noise must be >= 0 (a fraction of the image maximum, e.g. 0.2), got {noise}")
    if isinstance(resizing_factor, bool) or resizing_factor not in RESIZING_FACTORS:
        raise UserError(f"--crappify_resizing_factor must be 2, 4 or 6 (4 halves each axis), got {resizing_factor}")


def _check_images(images: Tensor) -> Tensor:
    """``(N, C, *spatial)`` with 2 or 3 spatial axes, as a floating tensor (integers become float32)."""
    if images.ndim - 2 not in UPSAMPLING_MODES:
        raise ValueError(f"expected images (N, C, H, W) or (N, C, D, H, W), got shape {tuple(images.shape)}")
    return images if images.is_floating_point() else images.float()


def image_maximum(images: Tensor) -> Tensor:
    """Each image's maximum over its channels and pixels, shaped to broadcast over the batch: ``(N, 1, ..., 1)``."""
    return images.amax(dim=tuple(range(1, images.ndim)), keepdim=True)


def _as_maximum(maximum: float | Tensor | None, images: Tensor) -> Tensor:
    """``maximum`` as a tensor broadcastable to ``images``: per image when None or of shape ``(N,)``."""
    if maximum is None:
        return image_maximum(images)
    value = torch.as_tensor(maximum, dtype=images.dtype, device=images.device)
    if value.ndim == 1 and value.shape[0] == images.shape[0]:
        return value.view(-1, *[1] * (images.ndim - 1))
    return value


def add_gaussian_noise(
    images: Tensor, noise: float, maximum: float | Tensor | None = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Steps (a) and (b): add Gaussian noise of std ``noise * maximum`` and clip to ``[0, maximum]``."""
    images = _check_images(images)
    top = _as_maximum(maximum, images)
    if noise == 0:
        return torch.minimum(images.clamp(min=0), top)
    draws = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return torch.minimum((images + draws * (noise * top)).clamp(min=0), top)


def linear_resize_matrix(
    in_size: int,
    out_size: int,
    antialias: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The ``(out_size, in_size)`` matrix of a 1D linear resize with pixel centres aligned as ``align_corners=False``;
    when shrinking with ``antialias`` the triangle filter is widened by the scale (torch's and Pillow's algorithm).
    Each row is non-negative and sums to 1."""
    scale = in_size / out_size
    support = scale if antialias and scale > 1 else 1.0
    centres = (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * scale  # in input pixel units
    sources = torch.arange(in_size, device=device, dtype=torch.float64) + 0.5
    if support == 1.0:  # interpolation: clamp the sample point to the outer pixel centres, as torch does
        centres = centres.clamp(0.5, in_size - 0.5)
    weights = (1 - (sources[None, :] - centres[:, None]).abs() / support).clamp(min=0)
    return (weights / weights.sum(dim=1, keepdim=True)).to(dtype)


def resize_linear(images: Tensor, size: tuple[int, ...], antialias: bool = True) -> Tensor:
    """Resize the spatial axes of ``(N, C, *spatial)`` images to ``size``, one axis at a time by
    :func:`linear_resize_matrix` (so 3D antialiasing works as 2D); an axis already of its size is left alone."""
    spatial_dims = images.ndim - 2
    for axis, (current, target) in enumerate(zip(images.shape[2:], size)):
        if current == target:
            continue
        matrix = linear_resize_matrix(current, target, antialias, images.device, images.dtype)
        moved = images.movedim(2 + axis, -1)
        images = (moved @ matrix.T).movedim(-1, 2 + axis)
    assert images.ndim == spatial_dims + 2
    return images.contiguous()


def reduced_size(shape: tuple[int, ...], resizing_factor: int) -> tuple[int, ...]:
    """The down-sampled spatial shape: ``floor(size / sqrt(resizing_factor))`` per axis, at least 1."""
    shrink = math.sqrt(resizing_factor)
    return tuple(max(1, math.floor(size / shrink + 1e-9)) for size in shape)


def down_up_sample(images: Tensor, resizing_factor: int, antialias: bool = True) -> Tensor:
    """Steps (c) and (d): lower the resolution by ``resizing_factor`` (an area factor) and return to the same size."""
    images = _check_images(images)
    spatial = tuple(images.shape[2:])
    small = resize_linear(images, reduced_size(spatial, resizing_factor), antialias)
    return nnf.interpolate(small, size=spatial, mode=UPSAMPLING_MODES[len(spatial)], align_corners=False)


def crappify(
    images: Tensor,
    noise: float = 0.2,
    resizing_factor: int = 4,
    generator: torch.Generator | None = None,
    maximum: float | Tensor | None = 1.0,
    antialias: bool = True,
) -> Tensor:
    """BiaPy's crappify (see the module doc) of ``(N, C, *spatial)`` images in ``[0, maximum]``: noise, clip,
    down-sample, up-sample. ``maximum=None`` uses each image's own maximum, as BiaPy. Floating dtypes are kept
    (integers give float32); the same generator state gives the same output."""
    check_crappify_settings(noise, resizing_factor)
    images = _check_images(images)
    top = _as_maximum(maximum, images)
    noisy = add_gaussian_noise(images, noise, top, generator)
    return torch.minimum(down_up_sample(noisy, resizing_factor, antialias).clamp(min=0), top)


class Crappify:
    """Crappify on the fly: each call draws fresh noise (BiaPy's mode without stored degraded copies, so every
    epoch sees a new degradation of each image). The settings are checked once, here."""

    def __init__(
        self, noise: float = 0.2, resizing_factor: int = 4, maximum: float | Tensor | None = 1.0, antialias: bool = True
    ) -> None:
        check_crappify_settings(noise, resizing_factor)
        self.noise = noise
        self.resizing_factor = resizing_factor
        self.maximum = maximum
        self.antialias = antialias

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return crappify(images, self.noise, self.resizing_factor, generator, self.maximum, self.antialias)

    def __repr__(self) -> str:
        return f"Crappify(noise={self.noise}, resizing_factor={self.resizing_factor}, maximum={self.maximum})"
