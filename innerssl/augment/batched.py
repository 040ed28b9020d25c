"""The augmentation config applied to a whole batch at once, on the batch's device, with per-sample randomness.

:mod:`innerssl.augment.per_sample` runs torchvision v2 transforms one image at a time in data-loader
workers; this module gives the same augmentations as batched torch operations, so the views can be
made where the batch already is (the GPU in training) from a cache of decoded images.

Input: ``(B, C, H, W)`` with C = 1 or 3; uint8 (divided by 255), uint16 (divided by 65535) or floating
in [0, 1]; B may be 0. Output: float32, contiguous, ``(B, in_channels, H', W')`` in [0, 1], on the
input's device. The steps, each random one only when switched on, in per_sample.py's order:

    preprocess (resize shorter side, center crop; always) -> random resized crop (back to the
    preprocessed size) -> horizontal flip -> affine -> colour jitter -> gamma -> Gaussian blur ->
    solarize -> elastic -> Gaussian noise -> clamp to [0, 1] -> random erasing (value 0) -> channel
    conversion (:class:`~innerssl.augment.per_sample.ToChannels`)

Every random parameter is drawn per sample with torchvision's distributions (vectorised samplers for
the crop and erasing boxes, a random order of the colour operations per sample, ``p_apply`` per
sample), and the functions behind each step take explicit parameters (:func:`warp`,
:func:`color_jitter`, :func:`gaussian_blur`, :func:`erase`, ...), so they can be checked against
torchvision's functional ops.

**One resampling for the geometry.** Crop, flip and affine are all affine maps of pixel coordinates,
so their composition is one per-sample 2x3 matrix, and the image is resampled once (``grid_sample``,
bilinear) instead of three times: a third of the interpolation work, and one interpolation blur
instead of three. The crop box is read clamped to its outer pixel centres, as ``F.resized_crop``
does, and outside the affine's image the output is 0 (torchvision's fill), fading over half a pixel.

**Views of other sizes** (an SSL method's :class:`~innerssl.augment.views.ViewGroup`, such as DINO's
small local crops): ``forward(images, view_size, crop_scale)`` resamples the crop box straight to the
view's size in the same single resampling, and the later steps work at that size (the blur kernel is a
fraction of it, erasing boxes an area fraction); :meth:`BatchedAugmentation.views` makes all views of
a group in one pass over the batch repeated ``count`` times.

**No host-device synchronisation** when the batch is on a GPU: no ``.item()``, ``.tolist()``,
``.nonzero()``, boolean-mask indexing or Python ``if`` on tensor values; every per-sample choice is a
mask, a neutral parameter (factor 1) or ``torch.where``. On the CPU, where reading values costs
nothing, the steps that only some samples get run on those samples only (``index_select`` /
``index_copy_``); :func:`apply_to_selected` is the one place that chooses. Also on the CPU only, a
large batch is augmented in chunks (:data:`CPU_CHUNK_VALUES`) and the geometry's sampling grid
buffer is kept between calls: fresh memory costs page faults there. A module instance is therefore
for one thread at a time (as its generator is anyway).

**Randomness** comes only from a ``torch.Generator`` on the images' device, created on first use and
seeded with ``seed`` (:meth:`BatchedAugmentation.reseed` restarts it), never from torch's global
generator: a fixed seed reproduces the outputs of the same sequence of calls (same batch sizes), and
two calls (two views) differ. Give each process (data-parallel rank) its own seed.

Where the result differs from the per-sample path, on purpose:

- Crop boxes and affine translations are real-valued (torchvision rounds them to whole pixels), so
  the composed map needs no rounding; a crop box "fits" when its real-valued sides fit.
- The three geometric steps interpolate once, so the output is slightly sharper than after three
  successive bilinear interpolations; pixels that the affine's edge blends with the fill are
  weighted once by their coverage (torchvision's ``fill`` mask weights them twice). The elastic
  resampling likewise uses plain zeros padding.
- The elastic noise is drawn on a grid ``sigma / 2`` pixels apart and interpolated
  (:func:`elastic_displacement`): the same amplitude and smoothness as torchvision's per-pixel
  noise within a few percent, for a quarter of the random numbers and filtering at sigma 4.
- On the CPU random numbers are drawn only for the selected samples, chunk by chunk, so CPU and GPU
  streams differ (each is reproducible).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import nn

from innerssl.augment.config import (
    AffineConfig,
    AugmentationConfig,
    BlurConfig,
    ColorConfig,
    CropConfig,
    ElasticConfig,
    ErasingConfig,
    GaussianNoiseConfig,
    Range,
    SolarizeConfig,
)
from innerssl.augment.per_sample import RandomGaussianBlur, ToChannels
from innerssl.augment.views import view_shape, with_crop_scale

MAX_BOX_TRIES = 10
"""RandomResizedCrop and RandomErasing draw up to this many boxes before falling back (torchvision)."""

COLOR_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""R, G, B weights of torchvision's colour ops (contrast mean, saturation): 0.2989, not ToChannels' 0.299."""

ELASTIC_KERNEL_PER_SIGMA = 8
"""torchvision's ElasticTransform smooths its noise with a kernel of ``int(8 * sigma + 1)`` pixels (made odd)."""

ELASTIC_SIGMA_PER_STRIDE = 2.0
"""The elastic noise is drawn on a grid ``sigma / 2`` pixels apart (at least 1): the smoothed field
varies over about ``sigma`` pixels, so bilinear interpolation from that grid stays within about 3%
(RMS) of the full-resolution field, for a quarter or less of the random numbers and filtering."""

CPU_CHUNK_VALUES = 1 << 22
"""On the CPU a batch is augmented in chunks of at most this many output values (images x channels x
pixels; about 80 grayscale or 27 RGB 224 px images): every intermediate tensor then stays small
enough for the C allocator to reuse its memory instead of mapping fresh pages, which dominates the
cost of large temporaries, and closer to the caches. On a GPU the whole batch is one chunk."""

INTEGER_SCALES: dict[torch.dtype, float] = {torch.uint8: 255.0, torch.uint16: 65535.0}
"""Integer input dtypes and the value that maps to intensity 1."""

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)
"""Colour operation ids, in torchvision ColorJitter's numbering (its ``fn_idx``)."""

_RGB_CHANNELS = 3
_MIN_CROP_SPAN = 1e-6
"""Floor of a crop box's extent between its outer pixel centres, so a box under a pixel wide divides safely."""
_HUE_SECTORS = 6.0
"""The HSV hue circle has six sectors (R, Y, G, C, B, M), so hue * 6 is the sector position."""
_GREEN_SECTOR = 2.0
_BLUE_SECTOR = 4.0
"""Sector positions of pure green and blue (red: 0), where those channels are the largest."""
_HUE_CHANNEL_CENTRES = (0.0, _GREEN_SECTOR, _BLUE_SECTOR)
"""R, G, B: each channel is full within one sector of its centre and zero beyond two."""
_HUE_FULL_SECTORS = 1.0
"""A channel is at the maximum within one sector of its centre and falls to the minimum over the next."""
_MIN_HUE_SPREAD = 1e-12
"""Gray pixels (max = min) have hue 0: their numerator is 0, and this floor keeps the division finite."""

Transform = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------------------------
# Selection: the one place that decides between masks (GPU) and index subsets (CPU)


def uses_index_subsets(device: torch.device) -> bool:
    """Whether per-sample steps on ``device`` may run on the selected samples only.

    Only on the CPU: finding the selected samples reads tensor values on the host, which on a GPU is
    a synchronisation point; there every sample is computed and ``torch.where`` picks.
    """
    return device.type == "cpu"


def apply_to_selected(
    images: torch.Tensor,
    selected: torch.Tensor,
    transform: Transform,
    *params: torch.Tensor,
    in_place: bool = False,
) -> torch.Tensor:
    """``transform`` applied to the samples where ``selected`` (shape ``(B,)``) is True, others unchanged.

    ``transform(images, *params)`` gets a batch (all samples, or on the CPU only the selected ones)
    and the matching rows of each per-sample ``params`` tensor, and must not modify its input.
    ``in_place``: the CPU path may write the result into ``images`` (pass True only for a tensor the
    caller owns); otherwise ``images`` is left untouched.
    """
    if uses_index_subsets(images.device):
        index = selected.nonzero().squeeze(1)
        count = index.numel()
        if count == 0:
            return images
        if count == images.shape[0]:
            return transform(images, *params)
        chosen = transform(images.index_select(0, index), *(p.index_select(0, index) for p in params))
        if in_place:
            return images.index_copy_(0, index, chosen)
        return images.index_copy(0, index, chosen)
    mask = selected.view(-1, *([1] * (images.ndim - 1)))
    return torch.where(mask, transform(images, *params), images)


# ----------------------------------------------------------------------------------------------------
# Preprocess


def resized_size(height: int, width: int, resize: int) -> tuple[int, int]:
    """Size after resizing the shorter side to ``resize`` (torchvision's rule: the longer side truncated)."""
    if width <= height:
        return int(resize * height / width), resize
    return resize, int(resize * width / height)


def output_size(height: int, width: int, resize: int | None, center_crop_size: int | None) -> tuple[int, int]:
    """Image size after the preprocess step (every later step keeps it)."""
    if resize is not None:
        height, width = resized_size(height, width, resize)
    if center_crop_size is not None:
        height = width = center_crop_size
    return height, width


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's ``center_crop``: a view (slicing), zero-padded first where the image is smaller."""
    height, width = images.shape[-2:]
    if size > height or size > width:
        pad_w = max(size - width, 0)
        pad_h = max(size - height, 0)
        images = nnf.pad(images, [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2])
        height, width = images.shape[-2:]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Intensities as float32 in [0, 1]: integers divided by their dtype's full scale, floats cast."""
    if images.dtype in INTEGER_SCALES:
        return images.to(torch.float32).mul_(1.0 / INTEGER_SCALES[images.dtype])
    return images.to(torch.float32)


def preprocess(images: torch.Tensor, resize: int | None = None, center_crop_size: int | None = None) -> torch.Tensor:
    """Resize the shorter side (bilinear, antialiased) and center crop, as ``v2.Resize`` + ``v2.CenterCrop``.

    Returns a new contiguous float32 tensor (never a view of ``images``), so later steps may work in
    place. The resize is skipped when the size already matches, and the crop is taken before the
    conversion to float so only the kept pixels are converted.
    """
    height, width = images.shape[-2:]
    resized = False
    if resize is not None and resized_size(height, width, resize) != (height, width):
        size = resized_size(height, width, resize)
        images = nnf.interpolate(to_float(images), size=size, mode="bilinear", align_corners=False, antialias=True)
        resized = True
    if center_crop_size is not None:
        images = center_crop(images, center_crop_size)
    if resized:
        return images.contiguous()
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    if images.dtype == torch.uint8:
        # One pass: convert and scale together (uint16 has no arithmetic kernels on every device).
        return torch.mul(images, 1.0 / INTEGER_SCALES[torch.uint8], out=out)
    out.copy_(images)
    if images.dtype in INTEGER_SCALES:
        out.mul_(1.0 / INTEGER_SCALES[images.dtype])
    return out


# ----------------------------------------------------------------------------------------------------
# Random parameters


def _uniform(
    shape: tuple[int, ...], low: float, high: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device).mul_(high - low).add_(low)


def _coin(count: int, probability: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(count, generator=generator, device=device) < probability


def _first_fitting(fits: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per row, the values of the first try that fits, and whether any did (argmax keeps the first max)."""
    first = fits.to(torch.int32).argmax(dim=1, keepdim=True)
    return (fits.any(dim=1), *(v.gather(1, first).squeeze(1) for v in values))


def sample_crop_boxes(
    count: int, height: int, width: int, scale: Range, ratio: Range, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """RandomResizedCrop's box sampler for ``count`` images at once: ``(count, 4)`` top, left, height, width.

    As torchvision: up to :data:`MAX_BOX_TRIES` tries of an area fraction uniform in ``scale`` and an
    aspect ratio (width / height) log-uniform in ``ratio``; the first box that fits wins, at a uniform
    position; if none fits, the central box of the whole image with its ratio clamped into ``ratio``.
    Boxes are real-valued (not rounded to pixels).
    """
    area = height * width
    tries = _uniform((count, MAX_BOX_TRIES), scale[0], scale[1], generator, device).mul_(area)
    log_ratio = _uniform((count, MAX_BOX_TRIES), math.log(ratio[0]), math.log(ratio[1]), generator, device)
    aspect = log_ratio.exp_()
    box_w = (tries * aspect).sqrt_()
    box_h = (tries / aspect).sqrt_()
    fits = (box_w <= width) & (box_h <= height)
    found, box_h, box_w = _first_fitting(fits, box_h, box_w)

    in_ratio = width / height
    if in_ratio < ratio[0]:
        fallback_w, fallback_h = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fallback_w, fallback_h = height * ratio[1], float(height)
    else:
        fallback_w, fallback_h = float(width), float(height)
    box_h = torch.where(found, box_h, fallback_h)
    box_w = torch.where(found, box_w, fallback_w)
    position = torch.rand((count, 2), generator=generator, device=device)
    # The fallback is centred: position 0.5.
    position = torch.where(found.unsqueeze(1), position, 0.5)
    top = position[:, 0] * (height - box_h)
    left = position[:, 1] * (width - box_w)
    return torch.stack([top, left, box_h, box_w], dim=1)


def sample_affine(
    count: int, height: int, width: int, config: AffineConfig, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RandomAffine's parameters for ``count`` images: angles (degrees), translations (pixels, x y), shears (degrees).

    Angle uniform in [-max_angle, max_angle]; shift uniform in [-max_shift * size, max_shift * size]
    (not rounded to pixels); shear parallel to x uniform in [-max_shear, max_shear].
    """
    angles = _uniform((count,), -config.max_angle, config.max_angle, generator, device)
    unit = _uniform((count, 2), -1.0, 1.0, generator, device)
    translations = torch.stack(
        [unit[:, 0] * (config.max_horizontal_shift * width), unit[:, 1] * (config.max_vertical_shift * height)], dim=1
    )
    shears = _uniform((count,), -config.max_shear, config.max_shear, generator, device)
    return angles, translations, shears


# ----------------------------------------------------------------------------------------------------
# Geometry: crop + flip + affine in one resampling


def _inverse_affine_rows(
    angles: torch.Tensor, translations: torch.Tensor, shears: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's inverse affine map (``_get_inverse_affine_matrix``, scale 1, x shear) per sample.

    Both rows are ``(B, 3)`` coefficients of (x, y, 1) in pixel coordinates centred on the image:
    they map an output pixel to where it comes from in the un-rotated image.
    """
    rot = torch.deg2rad(angles)
    tan_shear = torch.tan(torch.deg2rad(shears))
    cos, sin = torch.cos(rot), torch.sin(rot)
    a, b = cos, -cos * tan_shear - sin
    c, d = sin, -sin * tan_shear + cos
    tx, ty = translations[:, 0], translations[:, 1]
    row_x = torch.stack([d, -b, -d * tx + b * ty], dim=1)
    row_y = torch.stack([-c, a, c * tx - a * ty], dim=1)
    return row_x, row_y


def _centred_coordinates(size: int, like: torch.Tensor) -> torch.Tensor:
    """Pixel centres ``0 .. size - 1`` shifted so the image centre is 0."""
    return torch.arange(size, dtype=torch.float32, device=like.device) - (size - 1) / 2.0


def _affine_field(
    row: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """``row[:, 0] * x + row[:, 1] * y + row[:, 2]`` over the pixel grid: ``(B, H, W)``, written once."""
    along_x = row[:, 0:1] * xs + row[:, 2:3]
    along_y = row[:, 1:2] * ys
    return torch.add(along_x.unsqueeze(1), along_y.unsqueeze(2), out=out)


def _coverage(field: torch.Tensor, size: int) -> torch.Tensor:
    """Weight that bilinear sampling with zeros padding gives the image at centred coordinate ``field``.

    1 inside, falling linearly to 0 over the half pixel beyond the outer pixel centres; in place.
    """
    return field.abs_().neg_().add_((size + 1) / 2.0).clamp_(0.0, 1.0)


def _to_source(
    plane: torch.Tensor,
    sign: torch.Tensor | None,
    start: torch.Tensor | None,
    length: torch.Tensor | None,
    view_size: int,
    source_size: int,
) -> None:
    """Turn one axis' centred coordinates in the affine's input into normalised source coordinates, in place.

    ``sign`` is -1 where that input is a mirror (x only); ``start`` and ``length`` are the crop box
    on this axis, read clamped to its outer pixel centres as ``F.resized_crop`` does: the clamp is a
    scalar clamp of the position in the box, between two per-sample scale-and-shifts. ``view_size``
    is the output's extent on this axis (the box is resized to it), ``source_size`` the input's;
    without a box they are equal.
    """
    scale = torch.ones_like(plane[:, 0, 0]) if sign is None else sign.to(plane.dtype)
    if start is None or length is None:
        plane.mul_((scale * (2.0 / source_size)).view(-1, 1, 1))
        return
    span = (length - 1.0).clamp_(min=_MIN_CROP_SPAN)
    # Position in the box: 0 at its first pixel centre, 1 at its last.
    plane.mul_((scale * length / (view_size * span)).view(-1, 1, 1)).add_(((length / 2.0 - 0.5) / span).view(-1, 1, 1))
    plane.clamp_(0.0, 1.0)
    plane.mul_((2.0 * span / source_size).view(-1, 1, 1)).add_(((2.0 * start + 1.0) / source_size - 1.0).view(-1, 1, 1))


def warp(
    images: torch.Tensor,
    boxes: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
    angles: torch.Tensor | None = None,
    translations: torch.Tensor | None = None,
    shears: torch.Tensor | None = None,
    scratch: torch.Tensor | None = None,
    view_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resized crop, then horizontal flip, then affine, per sample, as ONE bilinear resampling.

    ``boxes``: ``(B, 4)`` top, left, height, width in pixels (the crop is resized to the output
    size, as ``F.resized_crop``); ``flips``: ``(B,)`` bool; ``angles`` and ``shears``: ``(B,)``
    degrees, ``translations``: ``(B, 2)`` pixels (x, y), with ``F.affine``'s meaning (clockwise angle
    about the image centre, shear parallel to x, scale 1, fill 0) on the output-sized crop. Each
    ``None`` leaves that step out (give angles, translations and shears together). ``view_shape``:
    the output's (height, width), default the input's; without boxes a different shape resizes the
    whole image (bilinear, no antialiasing: multi-crop boxes are rarely more than 1.5 times their
    view). Returns a new float tensor.

    The sampling grid is built as two contiguous coordinate planes with in-place arithmetic and
    passed to ``grid_sample`` as a strided view, which it reads as fast as an interleaved grid.
    ``scratch``: a ``(B, 2, H', W')`` float32 buffer (the output's size) for those planes, to reuse
    between calls (on the CPU, fresh memory costs page faults); allocated when None.
    """
    count, _, height, width = images.shape
    out_height, out_width = view_shape or (height, width)
    device = images.device
    if boxes is None and (out_height, out_width) != (height, width):
        boxes = full_image_boxes(count, height, width, device)
    xs = _centred_coordinates(out_width, images)
    ys = _centred_coordinates(out_height, images)
    has_affine = angles is not None
    if has_affine:
        if translations is None or shears is None:
            raise ValueError("Give angles, translations and shears together")
        row_x, row_y = _inverse_affine_rows(angles, translations, shears)
    else:
        zeros = torch.zeros(count, dtype=torch.float32, device=device)
        ones = torch.ones_like(zeros)
        row_x = torch.stack([ones, zeros, zeros], dim=1)
        row_y = torch.stack([zeros, ones, zeros], dim=1)
    if boxes is None:
        starts: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
        lengths: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    else:
        top, left, box_h, box_w = boxes.to(torch.float32).unbind(dim=1)
        starts, lengths = (left, top), (box_w, box_h)
    signs = (None if flips is None else torch.where(flips, -1.0, 1.0), None)

    planes = (
        torch.empty((count, 2, out_height, out_width), dtype=torch.float32, device=device)
        if scratch is None
        else scratch
    )
    rows = ((row_x, out_width, width), (row_y, out_height, height))
    for axis, (row, view_size, source_size) in enumerate(rows):
        _affine_field(row, xs, ys, out=planes[:, axis])
        _to_source(planes[:, axis], signs[axis], starts[axis], lengths[axis], view_size, source_size)
    out = nnf.grid_sample(
        images, planes.permute(0, 2, 3, 1), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    if boxes is not None and has_affine:
        # With a crop the affine's input is not the source, so its fill (0 outside it, fading over half a
        # pixel like bilinear zeros padding) is a coverage factor; without one, zeros padding does it.
        # The planes are free again: recompute the affine's input coordinates there, no new buffers.
        for axis, (row, view_size, _source_size) in enumerate(rows):
            _coverage(_affine_field(row, xs, ys, out=planes[:, axis]), view_size)
        out.mul_(planes[:, 0].mul_(planes[:, 1]).unsqueeze(1))
    return out


def full_image_boxes(count: int, height: int, width: int, device: torch.device) -> torch.Tensor:
    """``(count, 4)`` boxes covering the whole image (top, left, height, width): a resize as a resized crop.

    Filled on the device (``torch.tensor`` of Python numbers would be a synchronising host-to-device copy).
    """
    zeros = torch.zeros(count, dtype=torch.float32, device=device)
    return torch.stack([zeros, zeros, torch.full_like(zeros, height), torch.full_like(zeros, width)], dim=1)


def horizontal_flip(images: torch.Tensor, flips: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Mirror the samples where ``flips`` is True; exact, no resampling (when flip is the only geometry)."""
    return apply_to_selected(images, flips, lambda batch: batch.flip(-1), in_place=in_place)


# ----------------------------------------------------------------------------------------------------
# Colour


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, 1, 1)`` to broadcast over ``(B, C, H, W)``."""
    return values.view(-1, 1, 1, 1)


def _weighted_channels(values: torch.Tensor) -> torch.Tensor:
    """Sum of R, G, B (dimension 1) with :data:`COLOR_GRAY_WEIGHTS`, keeping the dimension.

    Scalar weights rather than a weight tensor: building a tensor from Python numbers on a GPU would
    be a host-to-device copy on every call.
    """
    red, green, blue = COLOR_GRAY_WEIGHTS
    return (values[:, 0:1] * red).add_(values[:, 1:2], alpha=green).add_(values[:, 2:3], alpha=blue)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` grayscale with torchvision's colour-op weights; 1-channel images pass unchanged."""
    return images if images.shape[1] == 1 else _weighted_channels(images)


def blend_with_gray(
    images: torch.Tensor,
    factors: torch.Tensor,
    mean_weights: torch.Tensor | None = None,
    gray_weights: torch.Tensor | None = None,
    in_place: bool = False,
) -> torch.Tensor:
    """``clamp(f x + (1 - f) (m * mean of gray(x) + g * gray(x)), 0, 1)`` with per-sample f, m, g.

    torchvision's brightness (m = g = 0), contrast (m = 1) and saturation (g = 1) are all this
    blend (its ``_blend``), so one call applies a different one of them to each sample, and f = 1
    leaves a sample unchanged (exactly: ``x * 1 + 0``). ``None`` weights count as 0 (and skip the
    work); the grayscale is taken only for 3-channel images (saturation does nothing to gray ones).
    """
    factors = _per_sample(factors)
    shift = None
    if mean_weights is not None:
        # The mean of the grayscale image is the weighted sum of the channel means.
        means = images.mean(dim=(2, 3))
        means = means if images.shape[1] == 1 else _weighted_channels(means)
        shift = _per_sample(means.squeeze(1) * mean_weights) * (1.0 - factors)
    gray = grayscale(images) if gray_weights is not None and images.shape[1] == _RGB_CHANNELS else None
    out = images.mul_(factors) if in_place else images.mul(factors)
    if gray is not None and gray_weights is not None:
        out.addcmul_(gray, _per_sample(gray_weights) * (1.0 - factors))
    if shift is not None:
        out.add_(shift)
    return out.clamp_(0.0, 1.0)


def adjust_brightness(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_brightness`` per sample: ``x * f`` clamped to [0, 1]."""
    return blend_with_gray(images, factors)


def adjust_contrast(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_contrast`` per sample: blend with the mean of the grayscale image, clamp."""
    return blend_with_gray(images, factors, mean_weights=torch.ones_like(factors))


def adjust_saturation(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_saturation`` per sample: blend with the grayscale image; 1 channel: unchanged."""
    if images.shape[1] == 1:
        return images.clone()
    return blend_with_gray(images, factors, gray_weights=torch.ones_like(factors))


def adjust_hue(images: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """torchvision's ``adjust_hue`` per sample (shift in turns, [-0.5, 0.5]); 1 channel: unchanged.

    The hue is torchvision's RGB -> HSV formula, in sixths of a turn (``u``); back to RGB in closed
    form: channel = max - spread * clamp(circular distance from ``u`` to the channel's hue (0, 2, 4)
    - 1, 0, 1), which needs neither the saturation nor torchvision's table lookup. The "which channel
    is largest" choices are 0/1 float factors (``1 - sign(max - channel)``), not boolean masks and
    ``torch.where``, which are several times slower on a CPU.
    """
    if images.shape[1] == 1:
        return images.clone()
    red, green, blue = images.unbind(dim=1)
    high = torch.maximum(torch.maximum(red, green), blue)
    spread = high - torch.minimum(torch.minimum(red, green), blue)
    # 1 where the channel is the largest, red first, then green (torchvision's priority on ties).
    red_max = torch.sign(high - red).neg_().add_(1.0)
    green_max = torch.sign(high - green).neg_().add_(1.0).mul_(1.0 - red_max)
    blue_max = (1.0 - red_max).sub_(green_max)
    sector = (green - blue).mul_(red_max)
    sector.addcmul_(blue - red, green_max).addcmul_(red - green, blue_max)
    sector.div_(spread.clamp(min=_MIN_HUE_SPREAD))
    sector.add_(green_max, alpha=_GREEN_SECTOR).add_(blue_max, alpha=_BLUE_SECTOR)
    sector.add_(shifts.view(-1, 1, 1) * _HUE_SECTORS)
    # Into [0, 6): u - 6 floor(u / 6).
    sector.sub_(torch.floor(sector / _HUE_SECTORS).mul_(_HUE_SECTORS))
    out = torch.empty_like(images)
    for channel, centre in enumerate(_HUE_CHANNEL_CENTRES):
        distance = (sector - centre).abs_()
        distance = torch.minimum(distance, _HUE_SECTORS - distance)
        drop = distance.sub_(_HUE_FULL_SECTORS).clamp_(0.0, 1.0)
        torch.addcmul(high, spread, drop, value=-1.0, out=out[:, channel])
    return out


def color_jitter(
    images: torch.Tensor,
    order: torch.Tensor,
    brightness: torch.Tensor | None = None,
    contrast: torch.Tensor | None = None,
    saturation: torch.Tensor | None = None,
    hue: torch.Tensor | None = None,
    applied: torch.Tensor | None = None,
    in_place: bool = False,
) -> torch.Tensor:
    """torchvision's ColorJitter per sample, each sample with its own factors and order of operations.

    ``order``: ``(B, k)`` operation ids (:data:`BRIGHTNESS` ... :data:`HUE`), applied left to right;
    ids whose factors are ``None`` are skipped, as torchvision skips operations it was not given, and
    so are saturation and hue for 1-channel images. ``applied``: ``(B,)`` bool, the samples that are
    jittered at all (default: all). ``in_place``: ``images`` may be overwritten.

    At each position of the order, the samples doing brightness, contrast or saturation there get
    one :func:`blend_with_gray` together (each with its own factor and weights, factor 1 for the
    others), so there is no per-operation selection at all; the samples doing hue there go through
    :func:`apply_to_selected`.
    """
    count, device = images.shape[0], images.device
    if applied is None:
        applied = torch.ones(count, dtype=torch.bool, device=device)
    rgb = images.shape[1] == _RGB_CHANNELS
    blends = {BRIGHTNESS: brightness, CONTRAST: contrast, SATURATION: saturation if rgb else None}
    blends = {op: factors for op, factors in blends.items() if factors is not None}
    hue = hue if rgb else None
    for slot in range(order.shape[1]):
        doing = order[:, slot].masked_fill(~applied, -1)
        if blends:
            factors = torch.ones(count, dtype=torch.float32, device=device)
            for op, op_factors in blends.items():
                factors = torch.where(doing == op, op_factors.to(torch.float32), factors)
            mean_weights = (doing == CONTRAST).to(torch.float32) if CONTRAST in blends else None
            gray_weights = (doing == SATURATION).to(torch.float32) if SATURATION in blends else None
            images = blend_with_gray(images, factors, mean_weights, gray_weights, in_place=in_place)
            in_place = True
        if hue is not None:
            result = apply_to_selected(images, doing == HUE, adjust_hue, hue, in_place=in_place)
            # After the first operation the batch is a new tensor this function owns.
            in_place = in_place or result is not images
            images = result
    return images


def adjust_gamma(images: torch.Tensor, gammas: torch.Tensor) -> torch.Tensor:
    """``clamp(x, 0, 1) ** gamma`` per sample (the per-sample path's RandomGamma)."""
    return images.clamp(0.0, 1.0).pow_(_per_sample(gammas))


def solarize(images: torch.Tensor, threshold: float, applied: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """torchvision's ``solarize`` (``x >= threshold -> 1 - x``) on the samples where ``applied``."""

    def invert_bright(batch: torch.Tensor) -> torch.Tensor:
        return torch.where(batch >= threshold, 1.0 - batch, batch)

    return apply_to_selected(images, applied, invert_bright, in_place=in_place)


# ----------------------------------------------------------------------------------------------------
# Filters


def gaussian_kernels(kernel_size: int, sigmas: torch.Tensor) -> torch.Tensor:
    """torchvision's 1-D Gaussian kernels, one per sigma: ``(len(sigmas), kernel_size)``, each summing to 1."""
    limit = (kernel_size - 1) / (2.0 * math.sqrt(2.0))
    taps = torch.linspace(-limit, limit, steps=kernel_size, dtype=torch.float32, device=sigmas.device)
    return torch.softmax((taps / sigmas.to(torch.float32).unsqueeze(1)).pow(2).neg(), dim=1)


def _separable_filter(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Reflect-pad and filter rows then columns with each sample's 1-D kernel (``(B, k)``, or ``(1, k)`` shared).

    One grouped (depthwise) convolution per axis over all samples and channels; ``k`` taps per pass
    instead of ``k * k`` for the 2-D kernel torchvision builds. The groups are laid out channels-last
    (group index fastest), which the CPU's depthwise kernels use without reordering: several times
    faster than the default layout when there are few groups (a few selected samples).
    """
    count, channels, height, width = images.shape
    size = kernels.shape[1]
    radius = size // 2
    padded = nnf.pad(images, [radius, radius, radius, radius], mode="reflect")
    groups = count * channels
    weights = kernels.expand(count, size).repeat_interleave(channels, dim=0)
    flat = padded.reshape(1, groups, height + 2 * radius, width + 2 * radius)
    flat = flat.contiguous(memory_format=torch.channels_last)
    rows = nnf.conv2d(flat, weights.view(groups, 1, 1, size), groups=groups)
    both = nnf.conv2d(rows, weights.view(groups, 1, size, 1), groups=groups)
    return both.reshape(count, channels, height, width).contiguous()


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigmas: torch.Tensor) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` (square odd kernel, reflect padding) with a sigma per sample."""
    return _separable_filter(images, gaussian_kernels(kernel_size, sigmas))


def elastic_kernel_size(sigma: float) -> int:
    """Side of the kernel that smooths the elastic noise: ``int(8 sigma + 1)``, made odd (torchvision)."""
    size = int(ELASTIC_KERNEL_PER_SIGMA * sigma + 1)
    return size if size % 2 == 1 else size + 1


def smooth_noise(noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """ElasticTransform's noise smoothing: ``F.gaussian_blur(noise, elastic_kernel_size(sigma), sigma)``.

    On a field smaller than the kernel (a small view, such as a multi-crop local crop) the kernel is cut to
    the largest one reflect padding allows (``2 * side - 1``): the Gaussian's outer taps, not its width.
    """
    if sigma <= 0.0:
        return noise
    fitting = 2 * min(noise.shape[-2:]) - 1
    size = min(elastic_kernel_size(sigma), fitting)
    kernel = gaussian_kernels(size, torch.full((1,), sigma, device=noise.device))
    return _separable_filter(noise, kernel)


def elastic_stride(sigma: float) -> int:
    """Spacing in pixels of the grid the elastic noise is drawn on: ``sigma / 2`` rounded down, at least 1."""
    return max(1, int(sigma // ELASTIC_SIGMA_PER_STRIDE))


def elastic_displacement(
    count: int, height: int, width: int, config: ElasticConfig, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Random displacement fields in pixels, ``(count, 2, H, W)`` (x then y), ElasticTransform's recipe.

    Uniform [-1, 1] noise smoothed by a Gaussian of ``sigma`` pixels, times ``alpha`` pixels (the
    config's alpha; torchvision's is twice that, see ``per_sample._elastic``). The noise is drawn on
    a grid :func:`elastic_stride` pixels apart, smoothed there (sigma / stride grid steps) and
    interpolated bilinearly: a 1 / stride**2 share of the random numbers and filtering. With
    normalised kernels each coarse noise value stands for stride**2 pixels' worth, so the field is
    divided by the stride to keep the full-resolution recipe's variance; its Gaussian correlation
    is the same (see :data:`ELASTIC_SIGMA_PER_STRIDE` for the interpolation error).
    """
    stride = elastic_stride(config.sigma)
    rows = math.ceil((height - 1) / stride) + 1
    cols = math.ceil((width - 1) / stride) + 1
    noise = torch.rand((count, 2, rows, cols), generator=generator, device=device).mul_(2.0).sub_(1.0)
    field = smooth_noise(noise, config.sigma / stride).mul_(config.alpha / stride)
    if stride == 1:
        return field
    # Coarse point i lies on pixel i * stride: align_corners=True to (rows - 1) * stride + 1 pixels.
    size = ((rows - 1) * stride + 1, (cols - 1) * stride + 1)
    field = nnf.interpolate(field, size=size, mode="bilinear", align_corners=True)
    return field[..., :height, :width]


def elastic(images: torch.Tensor, displacement: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Move each pixel by ``displacement`` (``(B, 2, H, W)``, pixels) like ``F.elastic``: bilinear, zeros outside.

    ``in_place``: the sampling grid may be built in ``displacement``'s memory (which is then lost).
    """
    _, _, height, width = images.shape
    planes = displacement if in_place else displacement.clone()
    xs = (torch.arange(width, dtype=torch.float32, device=images.device) * 2.0 + 1.0) / width - 1.0
    ys = (torch.arange(height, dtype=torch.float32, device=images.device) * 2.0 + 1.0) / height - 1.0
    planes[:, 0].mul_(2.0 / width).add_(xs)
    planes[:, 1].mul_(2.0 / height).add_(ys.unsqueeze(1))
    grid = planes.permute(0, 2, 3, 1)
    return nnf.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def add_gaussian_noise(images: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """``x + N(0, std)`` per pixel and channel (clamping is a later step)."""
    noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=torch.float32)
    return noise.mul_(std).add_(images)


# ----------------------------------------------------------------------------------------------------
# Erasing


def sample_erasing_boxes(
    count: int, height: int, width: int, scale: Range, ratio: Range, generator: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """RandomErasing's box sampler for ``count`` images: ``(count, 4)`` top, left, height, width, and found.

    As torchvision: up to :data:`MAX_BOX_TRIES` tries of an area fraction uniform in ``scale`` and a
    log-uniform ``ratio`` (here height / width, as torchvision uses it), sides rounded to pixels; the
    first box smaller than the image wins, at a uniform whole-pixel position; ``found`` is False
    where none fits (that sample is not erased).
    """
    area = height * width
    target = _uniform((count, MAX_BOX_TRIES), scale[0], scale[1], generator, device).mul_(area)
    aspect = _uniform((count, MAX_BOX_TRIES), math.log(ratio[0]), math.log(ratio[1]), generator, device).exp_()
    box_h = (target * aspect).sqrt_().round_()
    box_w = (target / aspect).sqrt_().round_()
    fits = (box_h < height) & (box_w < width)
    found, box_h, box_w = _first_fitting(fits, box_h, box_w)
    box_h = torch.where(found, box_h, 0.0)
    box_w = torch.where(found, box_w, 0.0)
    position = torch.rand((count, 2), generator=generator, device=device)
    top = torch.minimum((position[:, 0] * (height - box_h + 1)).floor_(), height - box_h)
    left = torch.minimum((position[:, 1] * (width - box_w + 1)).floor_(), width - box_w)
    return torch.stack([top, left, box_h, box_w], dim=1).to(torch.int64), found


def erasing_mask(boxes: torch.Tensor, applied: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, 1, H, W)`` float32, 1 inside each applied sample's box and 0 elsewhere.

    The outer product of a row mask and a column mask; float rather than bool, because multiplying
    by ``1 - mask`` is several times faster on a CPU than ``masked_fill``.
    """
    in_rows, in_cols = _box_masks(boxes, applied, height, width)
    return in_rows * in_cols


def _box_masks(
    boxes: torch.Tensor, applied: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Float row mask ``(B, 1, H, 1)`` (zero where not applied) and column mask ``(B, 1, 1, W)`` of each box."""
    top, left, box_h, box_w = boxes.unbind(dim=1)
    rows = torch.arange(height, device=boxes.device)
    cols = torch.arange(width, device=boxes.device)
    in_rows = (rows >= top.unsqueeze(1)) & (rows < (top + box_h).unsqueeze(1)) & applied.unsqueeze(1)
    in_cols = (cols >= left.unsqueeze(1)) & (cols < (left + box_w).unsqueeze(1))
    return in_rows.to(torch.float32).view(-1, 1, height, 1), in_cols.to(torch.float32).view(-1, 1, 1, width)


def erase(images: torch.Tensor, boxes: torch.Tensor, applied: torch.Tensor, in_place: bool = False) -> torch.Tensor:
    """Set each applied sample's box to 0 in all channels, as ``F.erase``."""
    in_rows, in_cols = _box_masks(boxes, applied, images.shape[2], images.shape[3])
    # 1 - rows x cols in one pass.
    keep = torch.addcmul(torch.ones((), device=images.device), in_rows, in_cols, value=-1.0)
    return images.mul_(keep) if in_place else images * keep


# ----------------------------------------------------------------------------------------------------
# Pipeline steps: each draws its parameters from the generator and transforms the batch


class _Step(nn.Module):
    """One switched-on augmentation: ``forward(images, generator) -> images`` (may work in place)."""

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class _Geometry(_Step):
    """Random resized crop, horizontal flip and affine (those switched on), fused in :func:`warp`.

    ``view_size`` (see :attr:`~innerssl.augment.views.ViewGroup.size`): the output views' size, None for the
    input's; crop boxes are drawn in the input, and the affine acts on the output-sized crop, as in the
    per-sample path (``RandomResizedCrop(view size)`` then ``RandomAffine``).
    """

    def __init__(
        self,
        crop: CropConfig | None,
        flip_prob: float | None,
        affine: AffineConfig | None,
        view_size: float | None = None,
    ) -> None:
        super().__init__()
        self.crop = crop
        self.flip_prob = flip_prob
        self.affine = affine
        self.view_size = view_size
        self._scratch: torch.Tensor | None = None

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, _, height, width = images.shape
        out_shape = view_shape(self.view_size, height, width)
        resized = out_shape != (height, width)
        device = images.device
        boxes = flips = None
        if self.crop is not None:
            boxes = sample_crop_boxes(count, height, width, self.crop.scale, self.crop.ratio, generator, device)
        if self.flip_prob is not None:
            flips = _coin(count, self.flip_prob, generator, device)
        if self.affine is None:
            if boxes is None and not resized:
                if flips is None:
                    return images
                return horizontal_flip(images, flips, in_place=True)
            scratch = self._grid_scratch(images, out_shape)
            return warp(images, boxes=boxes, flips=flips, scratch=scratch, view_shape=out_shape)
        angles, translations, shears = sample_affine(count, *out_shape, self.affine, generator, device)
        scratch = self._grid_scratch(images, out_shape)
        return warp(images, boxes, flips, angles, translations, shears, scratch, view_shape=out_shape)

    def __getstate__(self) -> dict[str, object]:
        """Pickle and deepcopy without the scratch buffer (it is only a cache)."""
        state = dict(self.__dict__)
        state["_scratch"] = None
        return state

    def _grid_scratch(self, images: torch.Tensor, out_shape: tuple[int, int]) -> torch.Tensor | None:
        """The grid buffer kept between calls on the CPU (a GPU's caching allocator already reuses memory)."""
        if images.device.type != "cpu":
            return None
        count = images.shape[0]
        scratch = self._scratch
        if scratch is None or scratch.shape[0] < count or scratch.shape[2:] != out_shape:
            scratch = self._scratch = torch.empty((count, 2, *out_shape), dtype=torch.float32)
        return scratch[:count]

    def extra_repr(self) -> str:
        size = "" if self.view_size is None else f", view_size={self.view_size}"
        return f"crop={self.crop}, flip_prob={self.flip_prob}, affine={self.affine}{size}"


class _ColorJitter(_Step):
    """ChannelAwareColorJitter per sample: saturation and hue only for 3-channel images."""

    def __init__(self, config: ColorConfig) -> None:
        super().__init__()
        self.config = config
        self.ranges: dict[int, Range] = {}
        for op_id, strength in (
            (BRIGHTNESS, config.brightness),
            (CONTRAST, config.contrast),
            (SATURATION, config.saturation),
        ):
            if strength > 0:
                self.ranges[op_id] = (max(0.0, 1.0 - strength), 1.0 + strength)
        if config.hue > 0:
            self.ranges[HUE] = (-config.hue, config.hue)

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, device = images.shape[0], images.device
        gray = images.shape[1] != _RGB_CHANNELS
        active = [op for op in self.ranges if not (gray and op in (SATURATION, HUE))]
        if not active:
            return images
        applied = _coin(count, self.config.p_apply, generator, device)
        factors: dict[int, torch.Tensor] = {
            op: _uniform((count,), *self.ranges[op], generator, device) for op in active
        }
        # A uniformly random order of the active operations per sample (the relative order they have in
        # torchvision's random permutation of all four).
        ranks = torch.rand((count, len(active)), generator=generator, device=device).argsort(dim=1)
        order = torch.zeros_like(ranks)
        for index, op in enumerate(active):
            order.masked_fill_(ranks == index, op)
        return color_jitter(
            images,
            order,
            brightness=factors.get(BRIGHTNESS),
            contrast=factors.get(CONTRAST),
            saturation=factors.get(SATURATION),
            hue=factors.get(HUE),
            applied=applied,
            in_place=True,
        )

    def extra_repr(self) -> str:
        return str(self.config)


class _Gamma(_Step):
    """RandomGamma with a gamma per sample."""

    def __init__(self, scale: Range) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        gammas = _uniform((images.shape[0],), *self.scale, generator, images.device)
        return images.clamp_(0.0, 1.0).pow_(_per_sample(gammas))

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class _Blur(_Step):
    """RandomGaussianBlur per sample (sigma and p_apply), kernel side from the image size."""

    def __init__(self, config: BlurConfig) -> None:
        super().__init__()
        self.config = config
        self.rule = RandomGaussianBlur(config)

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, _, height, width = images.shape
        applied = _coin(count, self.config.p_apply, generator, images.device)
        sigmas = _uniform((count,), *self.config.sigma, generator, images.device)
        size = self.rule.kernel_size(height, width)
        return apply_to_selected(images, applied, lambda batch, s: gaussian_blur(batch, size, s), sigmas, in_place=True)

    def extra_repr(self) -> str:
        return str(self.config)


class _Solarize(_Step):
    """RandomSolarize with p_apply per sample."""

    def __init__(self, config: SolarizeConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        applied = _coin(images.shape[0], self.config.p_apply, generator, images.device)
        return solarize(images, self.config.threshold, applied, in_place=True)

    def extra_repr(self) -> str:
        return str(self.config)


class _Elastic(_Step):
    """ElasticTransform with p_apply per sample; fields are drawn only for the deformed samples on the CPU."""

    def __init__(self, config: ElasticConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        applied = _coin(images.shape[0], self.config.p_apply, generator, images.device)

        def deform(batch: torch.Tensor) -> torch.Tensor:
            count, _, height, width = batch.shape
            field = elastic_displacement(count, height, width, self.config, generator, batch.device)
            return elastic(batch, field, in_place=True)

        return apply_to_selected(images, applied, deform, in_place=True)

    def extra_repr(self) -> str:
        return str(self.config)


class _Noise(_Step):
    """Additive Gaussian noise with p_apply per sample."""

    def __init__(self, config: GaussianNoiseConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        applied = _coin(images.shape[0], self.config.p_apply, generator, images.device)
        return apply_to_selected(
            images, applied, lambda batch: add_gaussian_noise(batch, self.config.std, generator), in_place=True
        )

    def extra_repr(self) -> str:
        return str(self.config)


class _Clamp(_Step):
    """Back into [0, 1] after noise (and before erasing, so erased boxes are exactly 0)."""

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return images.clamp_(0.0, 1.0)


class _Erasing(_Step):
    """RandomErasing (value 0) with p_apply per sample."""

    def __init__(self, config: ErasingConfig) -> None:
        super().__init__()
        self.config = config

    def forward(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        count, _, height, width = images.shape
        applied = _coin(count, self.config.p_apply, generator, images.device)
        boxes, found = sample_erasing_boxes(
            count, height, width, self.config.scale, self.config.ratio, generator, images.device
        )
        return erase(images, boxes, applied & found, in_place=True)

    def extra_repr(self) -> str:
        return str(self.config)


# ----------------------------------------------------------------------------------------------------
# The module


class BatchedAugmentation(nn.Module):
    """The config's pipeline for a batch ``(B, C, H, W)``; see the module docstring for order and rules.

    ``forward(images)`` gives one view of every image at the config's output size; ``forward(images,
    view_size, crop_scale)`` and :meth:`views` give views of another size or crop scale (an SSL method's
    :class:`~innerssl.augment.views.ViewGroup`), drawn from the same random stream.
    """

    def __init__(self, config: AugmentationConfig, in_channels: int, seed: int = 0) -> None:
        super().__init__()
        self.config = config
        self.seed = seed
        self.to_channels = ToChannels(in_channels)
        self._generators: dict[torch.device, torch.Generator] = {}
        self.steps = nn.ModuleList(_build_steps(config))
        self._variant_steps: dict[tuple[float | None, Range | None], nn.ModuleList] = {}
        """Steps of other view sizes and crop scales, built on first use (they hold no tensors worth saving)."""

    @property
    def in_channels(self) -> int:
        return self.to_channels.in_channels

    @property
    def is_random(self) -> bool:
        """Whether any augmentation is switched on (otherwise this is the deterministic preprocess)."""
        return self.config.is_random

    def reseed(self, seed: int) -> None:
        """Restart the random stream of every device from ``seed``."""
        self.seed = seed
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        """This module's generator on ``device``, created and seeded on first use."""
        generator = self._generators.get(device)
        if generator is None:
            generator = torch.Generator(device=device)
            generator.manual_seed(self.seed)
            self._generators[device] = generator
        return generator

    def steps_for(self, view_size: float | None = None, crop_scale: Range | None = None) -> nn.ModuleList:
        """The steps that make views of ``view_size`` with crops of ``crop_scale`` (None: the config's)."""
        if view_size is None and crop_scale is None:
            return self.steps
        key = (view_size, crop_scale)
        steps = self._variant_steps.get(key)
        if steps is None:
            steps = nn.ModuleList(_build_steps(with_crop_scale(self.config, crop_scale), view_size))
            self._variant_steps[key] = steps
        return steps

    def forward(
        self, images: torch.Tensor, view_size: float | None = None, crop_scale: Range | None = None
    ) -> torch.Tensor:
        _check_batch(images)
        pre = self.config.preprocess
        count, channels, height, width = images.shape
        preprocessed = output_size(height, width, pre.resize, pre.center_crop_size)
        size = view_shape(view_size, *preprocessed)
        steps = self.steps_for(view_size, crop_scale)
        chunk = count
        if images.device.type == "cpu":
            # Where the views are smaller than the preprocessed images (local crops), those are the larger tensors.
            pixels = max(size[0] * size[1], preprocessed[0] * preprocessed[1])
            largest = max(1, CPU_CHUNK_VALUES // (max(channels, self.in_channels) * pixels))
            chunk = math.ceil(count / math.ceil(count / largest)) if count else largest  # equal chunks
        if count == 0:
            return torch.empty((0, self.in_channels, *size), dtype=torch.float32, device=images.device)
        if count <= chunk:
            return self._augment(images, steps).contiguous()
        out = torch.empty((count, self.in_channels, *size), dtype=torch.float32, device=images.device)
        for start in range(0, count, chunk):
            out[start : start + chunk] = self._augment(images[start : start + chunk], steps)
        return out

    def views(
        self, images: torch.Tensor, count: int, view_size: float | None = None, crop_scale: Range | None = None
    ) -> tuple[torch.Tensor, ...]:
        """``count`` views of every image in ONE pass: the batch repeated ``count`` times, augmented (per-sample
        random parameters make every copy different) and split into ``count`` batches in the images' order.

        One pass rather than ``count`` calls: a GPU gets one large launch per operation instead of ``count``
        small ones. The input is repeated before the preprocess, where it is smallest (stored integers).
        """
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        _check_batch(images)
        repeated = images if count == 1 else images.repeat(count, 1, 1, 1)
        out = self(repeated, view_size, crop_scale)
        return tuple(out.unflatten(0, (count, images.shape[0])).unbind(0))

    def _augment(self, images: torch.Tensor, steps: nn.ModuleList) -> torch.Tensor:
        pre = self.config.preprocess
        batch = preprocess(images, pre.resize, pre.center_crop_size)
        generator = self.generator(batch.device)
        for step in steps:
            batch = step(batch, generator)
        return self.to_channels(batch)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, seed={self.seed}, preprocess={self.config.preprocess}"


def build_batched_transform(config: AugmentationConfig, in_channels: int, seed: int = 0) -> BatchedAugmentation:
    """The config's batched pipeline (the counterpart of ``build_per_sample_transform``)."""
    return BatchedAugmentation(config, in_channels, seed)


def _build_steps(config: AugmentationConfig, view_size: float | None = None) -> list[_Step]:
    aug = config.augmentation
    steps: list[_Step] = []
    if aug.use_random_crop or aug.use_random_horizontal_flip or aug.use_random_affine or view_size is not None:
        steps.append(
            _Geometry(
                aug.random_crop if aug.use_random_crop else None,
                aug.random_horizontal_flip.prob if aug.use_random_horizontal_flip else None,
                aug.random_affine if aug.use_random_affine else None,
                view_size,
            )
        )
    if aug.use_random_color:
        steps.append(_ColorJitter(aug.random_color))
    if aug.use_gamma_transform:
        steps.append(_Gamma(aug.gamma.scale))
    if aug.use_gaussian_blur:
        steps.append(_Blur(aug.gaussian_blur))
    if aug.use_solarize:
        steps.append(_Solarize(aug.solarize))
    if aug.use_elastic_transform:
        steps.append(_Elastic(aug.elastic_transform))
    if aug.use_gaussian_noise:
        steps.append(_Noise(aug.gaussian_noise))
    steps.append(_Clamp())
    if aug.use_random_erasing:
        steps.append(_Erasing(aug.random_erasing))
    return steps


def _check_batch(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"Expected a batch of images (B, C, H, W), got {shape}")
    if images.shape[1] not in (1, _RGB_CHANNELS):
        raise ValueError(f"Expected 1 or 3 channels, got {images.shape[1]}")
    if images.dtype not in INTEGER_SCALES and not images.is_floating_point():
        raise ValueError(f"Expected uint8, uint16 or floating images, got {images.dtype}")
