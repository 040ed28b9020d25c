"""Whole-image inference by overlapping tiles, and random training patches, for 2D and 3D images.

Restoration networks are trained on patches and validated/tested on whole images that may not fit in memory at
once (or whose size the network does not accept), so the image is cut into tiles of ``patch_size``, each tile is
run through the network, and the outputs are blended back into one image (BiaPy's ``--test_overlap`` and
``--test_padding``). Arrays are channel-first, ``(C, *spatial)`` with 2 or 3 spatial axes, as in MONAI.

**Placement.** Per axis, a tile is a *core* of ``patch - 2 * padding`` pixels with ``padding`` pixels of context
on each side. The cores cover the image: they start every ``step = floor(core * (1 - overlap))`` pixels (at least
1) and the last one is moved back to end at the image's last pixel, so nothing is left uncovered and no core
starts outside the image. The image is reflection-padded (numpy's and torch's ``"reflect"``: the edge pixel is not
repeated) by ``padding`` on both sides, so border tiles have context, and an axis shorter than the core is also
reflection-padded at its end up to the core's size; merging crops back to the original size.

**Blending weight.** Each tile's output is weighted by a separable window (:meth:`TilingPlan.blend_weights`):
0 in the ``padding`` border (that context is discarded: there the network saw its own zero-padded edge), a
linear ramp ``1/(r+1), 2/(r+1), ..., r/(r+1)`` over the ``r = core - step`` pixels a core shares with its
neighbour at each end, and 1 in between (with ``r`` at most half the core: an overlap of 50% or more gives a
triangle). Two neighbouring ramps
then add up to exactly 1 (a partition of unity), so tiles cross-fade without seams and without the
down-weighting of tile edges that a Gaussian window imposes even where there is no overlap; every weight in the
core is positive, so pixels seen by one tile only (the image border, the last shifted tile) are still covered.
The blended sum is divided by the accumulated weight.

**Round trip.** ``merge(split(x))`` equals ``x`` to float rounding of the weight normalisation: within a few units
in the last place (below ``1e-6 * max|x|`` in float32), and bit-exact where a single tile's plateau (weight 1)
covers a pixel. A network that acts pixel-wise, or whose receptive field radius is at most ``padding`` (with
reflection at its own borders), gives the same result by tiles as on the whole image.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from innerssl.errors import UserError

__all__ = [
    "TilingPlan",
    "extract_patches",
    "predict_by_tiles",
    "random_patch_origins",
    "reflect_indices",
    "reflect_pad",
]

SPATIAL_DIMS = (2, 3)


def _axis_count(value: object) -> int:
    """How many axes a scalar-or-sequence setting names (1 for a scalar, which applies to every axis)."""
    return len(value) if isinstance(value, Sequence) else 1


def _per_axis(value: object, spatial_dims: int) -> tuple[object, ...]:
    """A scalar applies to every spatial axis; a sequence must name each axis once (checked by the caller)."""
    return tuple(value) if isinstance(value, Sequence) else (value,) * spatial_dims


def _spatial_dims(image_shape: Sequence[int]) -> int:
    """The image's number of spatial axes, which must be 2 or 3 (a bug elsewhere if not: images come from code)."""
    if len(image_shape) not in SPATIAL_DIMS or any(operator.index(size) < 1 for size in image_shape):
        raise ValueError(f"image_shape must be 2 or 3 positive spatial sizes (no channel axis), got {image_shape}")
    return len(image_shape)


def check_patch_size(patch_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """``--patch_size`` as one positive int per spatial axis (a single int applies to every axis)."""
    count = _axis_count(patch_size)
    sizes = _per_axis(patch_size, spatial_dims)
    try:
        ints = tuple(operator.index(size) for size in sizes)
    except TypeError:
        ints = ()
    if count not in (1, spatial_dims) or len(ints) != spatial_dims or min(ints) < 1:
        raise UserError(
            f"--patch_size must be {spatial_dims} positive whole sizes, one per spatial axis of these "
            f"{spatial_dims}D images (or one size for all), got {patch_size}"
        )
    return ints


def _check_overlap(overlap: float | Sequence[float], spatial_dims: int) -> tuple[float, ...]:
    """``--test_overlap`` as one fraction in [0, 1) per spatial axis."""
    values = _per_axis(overlap, spatial_dims)
    try:
        fractions = tuple(float(value) for value in values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        fractions = ()
    valid = len(fractions) == spatial_dims and all(0.0 <= value < 1.0 for value in fractions)
    if _axis_count(overlap) not in (1, spatial_dims) or not valid:
        raise UserError(
            f"--test_overlap must be a fraction in [0, 1) (e.g. 0.5), one for all or one per each of the "
            f"{spatial_dims} spatial axes, got {overlap}"
        )
    return fractions


def _check_padding(padding: int | Sequence[int], patch_size: tuple[int, ...]) -> tuple[int, ...]:
    """``--test_padding`` as whole pixels per axis with ``0 <= padding < patch / 2``, so each tile keeps a core."""
    spatial_dims = len(patch_size)
    values = _per_axis(padding, spatial_dims)
    try:
        pixels = tuple(operator.index(value) for value in values)
    except TypeError:
        pixels = ()
    valid = len(pixels) == spatial_dims and all(0 <= pad and 2 * pad < size for pad, size in zip(pixels, patch_size))
    if _axis_count(padding) not in (1, spatial_dims) or not valid:
        limits = tuple((size - 1) // 2 for size in patch_size)
        raise UserError(
            f"--test_padding must be whole pixels with 0 <= padding < patch/2 per axis (at most {limits} for "
            f"--patch_size {patch_size}), one for all or one per axis, got {padding}"
        )
    return pixels


def reflect_indices(size: int, before: int, after: int, device: torch.device | str | None = None) -> Tensor:
    """Source index of each position of an axis of ``size`` padded by reflection (edge not repeated, as numpy's
    and torch's ``"reflect"``), for any pad width: torch's own reflect padding needs pads smaller than the axis."""
    positions = torch.arange(-before, size + after, device=device)
    if size == 1:
        return torch.zeros_like(positions)
    period = 2 * (size - 1)
    folded = positions.remainder(period)
    return torch.where(folded < size, folded, period - folded)


def reflect_pad(image: Tensor, before: Sequence[int], after: Sequence[int]) -> Tensor:
    """Reflection-pad the spatial axes of a ``(C, *spatial)`` image by ``before``/``after`` pixels per axis."""
    for axis, (low, high) in enumerate(zip(before, after), start=1):
        if low or high:
            image = image.index_select(axis, reflect_indices(image.shape[axis], low, high, image.device))
    return image


def _pad_to_patch(image: Tensor, patch_size: Sequence[int]) -> Tensor:
    """Reflection-pad the end of every spatial axis shorter than the patch up to the patch's size."""
    spatial = image.shape[1:]
    return reflect_pad(image, [0] * len(spatial), [max(p - s, 0) for p, s in zip(patch_size, spatial)])


def random_patch_origins(
    image_shape: Sequence[int],
    patch_size: int | Sequence[int],
    count: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``count`` patch origins ``(count, spatial_dims)`` (int64, on the generator's device), uniform over the
    positions where the patch lies inside the image. Along an axis shorter than the patch the origin is 0:
    :func:`extract_patches` reflection-pads that axis at its end up to the patch size (the whole axis plus its
    mirror image), so small images still give full-size training patches."""
    spatial_dims = _spatial_dims(image_shape)
    patch = check_patch_size(patch_size, spatial_dims)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    device = generator.device if generator is not None else torch.device("cpu")
    columns = [
        torch.randint(0, max(size - side, 0) + 1, (count,), generator=generator, device=device)
        for size, side in zip(image_shape, patch)
    ]
    return torch.stack(columns, dim=1)


def extract_patches(image: Tensor, origins: Tensor | Sequence[Sequence[int]], patch_size: Sequence[int]) -> Tensor:
    """Patches ``(K, C, *patch)`` of a ``(C, *spatial)`` image at ``origins`` ``(K, spatial_dims)``, gathered in one
    indexing operation on the image's device. Axes shorter than the patch are reflection-padded at their end first
    (see :func:`random_patch_origins`); every patch must otherwise lie inside the image (checked on the CPU, where
    reading the origins costs nothing)."""
    spatial_dims = image.ndim - 1
    patch = check_patch_size(patch_size, spatial_dims)
    origins = torch.as_tensor(origins, dtype=torch.long, device=image.device).reshape(-1, spatial_dims)
    image = _pad_to_patch(image, patch)
    if origins.device.type == "cpu" and origins.numel():
        highest = torch.tensor([size - side for size, side in zip(image.shape[1:], patch)])
        if bool((origins < 0).any()) or bool((origins > highest).any()):
            raise ValueError(f"patch origins must lie in [0, {tuple(highest.tolist())}] for {patch} patches")
    count = origins.shape[0]
    if count == 1 and origins.device.type == "cpu":  # one patch (training items): slicing is far cheaper than a gather
        window = tuple(slice(start, start + side) for start, side in zip(origins[0].tolist(), patch))
        return image[(slice(None), *window)][None].contiguous()
    index = []
    for axis, side in enumerate(patch):
        shape = [count] + [1] * spatial_dims
        shape[1 + axis] = side
        index.append((origins[:, axis, None] + torch.arange(side, device=image.device)).view(shape))
    return image[(slice(None), *index)].movedim(0, 1).contiguous()  # (C, K, *patch) -> (K, C, *patch)


@dataclass(frozen=True)
class TilingPlan:
    """How one image of spatial shape ``image_shape`` is cut into tiles and blended back (see the module doc).

    ``patch_size`` (``--patch_size``), ``overlap`` (``--test_overlap``) and ``padding`` (``--test_padding``) take
    one value per spatial axis or one for all; they are stored as per-axis tuples. For an image of another shape,
    ``dataclasses.replace(plan, image_shape=...)``.
    """

    image_shape: tuple[int, ...]
    patch_size: tuple[int, ...] | int
    overlap: tuple[float, ...] | float = 0.0
    padding: tuple[int, ...] | int = 0

    def __post_init__(self) -> None:
        spatial_dims = _spatial_dims(self.image_shape)
        patch = check_patch_size(self.patch_size, spatial_dims)
        object.__setattr__(self, "image_shape", tuple(operator.index(size) for size in self.image_shape))
        object.__setattr__(self, "patch_size", patch)
        object.__setattr__(self, "overlap", _check_overlap(self.overlap, spatial_dims))
        object.__setattr__(self, "padding", _check_padding(self.padding, patch))

    @property
    def spatial_dims(self) -> int:
        return len(self.image_shape)

    @property
    def core_size(self) -> tuple[int, ...]:
        """The part of each tile that is kept on merge: the patch less ``padding`` on both sides."""
        return tuple(patch - 2 * pad for patch, pad in zip(self.patch_size, self.padding))

    @property
    def steps(self) -> tuple[int, ...]:
        """Distance between consecutive cores (the last core is shifted back to end at the image's end)."""
        return tuple(max(1, math.floor(core * (1.0 - lap) + 1e-9)) for core, lap in zip(self.core_size, self.overlap))

    @cached_property
    def _core_starts(self) -> tuple[tuple[int, ...], ...]:
        """Per axis, the image coordinate where each tile's core starts."""
        starts = []
        for size, core, step in zip(self.image_shape, self.core_size, self.steps):
            last = max(size - core, 0)
            axis = list(range(0, last, step)) + [last]
            starts.append(tuple(axis))
        return tuple(starts)

    @property
    def grid(self) -> tuple[int, ...]:
        """Number of tiles along each axis."""
        return tuple(len(starts) for starts in self._core_starts)

    @property
    def num_tiles(self) -> int:
        return math.prod(self.grid)

    def tile_origins(self) -> list[tuple[int, ...]]:
        """Image coordinates of each tile's first pixel, in C order (last axis fastest): the tile covers
        ``origin .. origin + patch - 1``; origins may be negative and tiles may pass the image's end, where the
        pixels are reflections."""
        shifted = [[start - pad for start in starts] for starts, pad in zip(self._core_starts, self.padding)]
        return list(itertools.product(*shifted))

    @property
    def _pad_before(self) -> tuple[int, ...]:
        return self.padding

    @property
    def _pad_after(self) -> tuple[int, ...]:
        sizes = zip(self.padding, self.core_size, self.image_shape)
        return tuple(pad + max(core - size, 0) for pad, core, size in sizes)

    @property
    def padded_shape(self) -> tuple[int, ...]:
        """Spatial shape of the reflection-padded image that the tiles are cut from."""
        return tuple(size + low + high for size, low, high in zip(self.image_shape, self._pad_before, self._pad_after))

    def blend_weights(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The ``patch``-shaped separable window each tile's output is weighted by (see the module doc)."""
        window = torch.ones((), device=device, dtype=dtype)
        for patch, pad, core, step in zip(self.patch_size, self.padding, self.core_size, self.steps):
            ramp = min(core - step, core // 2)
            k = torch.arange(core, device=device, dtype=dtype)
            inner = torch.minimum(k + 1, core - k).div(ramp + 1).clamp(max=1.0)
            axis = torch.zeros(patch, device=device, dtype=dtype)
            axis[pad : pad + core] = inner
            window = window.unsqueeze(-1) * axis
        return window

    def pad(self, image: Tensor) -> Tensor:
        """The image reflection-padded to :attr:`padded_shape`, which the tiles are cut from."""
        if image.ndim != self.spatial_dims + 1 or tuple(image.shape[1:]) != self.image_shape:
            raise ValueError(f"expected an image (C, *{self.image_shape}), got shape {tuple(image.shape)}")
        return reflect_pad(image, self._pad_before, self._pad_after)

    @cached_property
    def _padded_origins(self) -> list[tuple[int, ...]]:
        """Tile origins in the padded image's coordinates (the cores' starts shifted by the reflection pad)."""
        return [tuple(o + low for o, low in zip(origin, self._pad_before)) for origin in self.tile_origins()]

    def split(self, image: Tensor) -> Tensor:
        """All tiles ``(T, C, *patch)`` of a ``(C, *image_shape)`` image, in :meth:`tile_origins` order."""
        return extract_patches(self.pad(image), self._padded_origins, self.patch_size)

    def _accumulate(self, total: Tensor, weight: Tensor, tiles: Tensor, start: int) -> None:
        """Add weighted tiles ``start .. start + len(tiles) - 1`` into the padded-image accumulators."""
        window = self.blend_weights(total.device, total.dtype)
        for tile, origin in zip(tiles, self._padded_origins[start : start + tiles.shape[0]]):
            place = tuple(slice(o, o + side) for o, side in zip(origin, self.patch_size))
            total[(slice(None), *place)] += tile.to(total.dtype) * window
            weight[place] += window

    def _check_tiles(self, tiles: Tensor, count: int) -> None:
        """Tiles must be ``(count, C, *patch)``: a network that changes the spatial size cannot be tiled."""
        if tiles.ndim != self.spatial_dims + 2 or tiles.shape[0] != count or tuple(tiles.shape[2:]) != self.patch_size:
            raise ValueError(f"expected tiles of shape ({count}, C, *{self.patch_size}), got {tuple(tiles.shape)}")

    def _accumulators(self, channels: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Zeroed weighted-sum ``(C, *padded)`` and weight ``(*padded)`` canvases (float32 unless float64)."""
        dtype = dtype if dtype == torch.float64 else torch.float32
        total = torch.zeros((channels, *self.padded_shape), device=device, dtype=dtype)
        return total, torch.zeros(self.padded_shape, device=device, dtype=dtype)

    def _normalised(self, total: Tensor, weight: Tensor) -> Tensor:
        """The blended image, cropped to :attr:`image_shape`."""
        crop = tuple(slice(low, low + size) for low, size in zip(self._pad_before, self.image_shape))
        return total[(slice(None), *crop)] / weight[crop]

    def merge(self, tiles: Tensor) -> Tensor:
        """Blend ``(T, C_out, *patch)`` tiles (all of them, in :meth:`tile_origins` order) into a
        ``(C_out, *image_shape)`` image: float32 (float64 if the tiles are)."""
        self._check_tiles(tiles, self.num_tiles)
        total, weight = self._accumulators(tiles.shape[1], tiles.device, tiles.dtype)
        self._accumulate(total, weight, tiles, 0)
        return self._normalised(total, weight)


def predict_by_tiles(
    image: Tensor,
    network: Callable[[Tensor], Tensor],
    plan: TilingPlan,
    batch_size: int = 1,
) -> Tensor:
    """Run ``network`` (``(B, C_in, *patch) -> (B, C_out, *patch)``) on the image's tiles, ``batch_size`` at a time
    under ``torch.no_grad``, and blend the outputs into ``(C_out, *image_shape)``. Tiles are cut and merged batch by
    batch, so only one batch of tiles is held at a time. The network's train/eval mode is left to the caller."""
    if batch_size < 1:
        raise UserError(f"The tile batch size must be at least 1, got {batch_size}")
    padded = plan.pad(image)
    total = weight = None
    for start in range(0, plan.num_tiles, batch_size):
        tiles = extract_patches(padded, plan._padded_origins[start : start + batch_size], plan.patch_size)
        with torch.no_grad():
            outputs = network(tiles)
        plan._check_tiles(outputs, tiles.shape[0])
        if total is None or weight is None:
            total, weight = plan._accumulators(outputs.shape[1], outputs.device, outputs.dtype)
        plan._accumulate(total, weight, outputs, start)
    assert total is not None and weight is not None  # a plan has at least one tile
    return plan._normalised(total, weight)
