"""The views an SSL method asks for: groups of views that share an output size and a crop scale.

A method declares its views as a tuple of :class:`ViewGroup` (``SSLModule.view_groups``); the data pipeline
makes them from the run's augmentation config and hands the method every view of a batch in the groups'
order (group 0's views first). Two-view methods ask for ``(ViewGroup(2),)``: two views of the config's own
size and crop scale. DINO's multi-crop asks for two global views and a number of small local crops.

Sizes: ``None`` is the config's output size (its preprocess output, as every single-view stream produces);
a number above 1 is the side of square views in pixels; a number up to 1 is a fraction of the config's output
side (the shorter one), so that a relative local crop size follows ``--image_size`` overrides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from innerssl.augment.config import AugmentationConfig, Range

ViewRole = Literal["global", "local"]
"""Global views cover most of the image (every method's views); local views are small crops (DINO's multi-crop)."""

MIN_VIEW_SIDE = 1
"""A relative size never rounds to an empty view."""


@dataclass(frozen=True)
class ViewGroup:
    """``count`` views of every image, each with its own random augmentation, at one size and crop scale."""

    count: int
    """Views of every image in this group (each drawn independently)."""
    size: float | None = None
    """Side of the square views: pixels when above 1, a fraction of the config's output side when at most 1;
    None: the config's output size (not necessarily square)."""
    crop_scale: Range | None = None
    """Area fraction of the random resized crop (switched on for this group even where the config has no
    crop; the aspect-ratio range stays the config's); None: the config's own crop."""
    role: ViewRole = "global"
    """What the method does with these views (DINO: the teacher sees the global views only)."""

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"A view group needs at least one view, got count={self.count!r}")
        if self.size is not None and not self.size > 0:
            raise ValueError(f"A view size must be positive (pixels, or a fraction up to 1), got {self.size}")
        if self.crop_scale is not None:
            low, high = self.crop_scale
            if not 0 < low <= high <= 1:
                raise ValueError(f"A crop scale must satisfy 0 < min <= max <= 1, got {self.crop_scale}")
        if self.role not in ("global", "local"):
            raise ValueError(f"A view role is global or local, got {self.role!r}")


def view_shape(size: float | None, height: int, width: int) -> tuple[int, int]:
    """(height, width) of the views of ``size`` (see :attr:`ViewGroup.size`) from a ``height x width`` output."""
    if size is None:
        return height, width
    if size > 1:
        side = int(round(size))
    else:
        side = max(MIN_VIEW_SIDE, int(round(size * min(height, width))))
    return side, side


def with_crop_scale(config: AugmentationConfig, crop_scale: Range | None) -> AugmentationConfig:
    """``config`` with its random resized crop switched on at ``crop_scale`` (``config`` itself for None)."""
    if crop_scale is None:
        return config
    section = config.augmentation
    crop = replace(section.random_crop, scale=(float(crop_scale[0]), float(crop_scale[1])))
    return replace(config, augmentation=replace(section, use_random_crop=True, random_crop=crop))


def total_views(groups: Sequence[ViewGroup]) -> int:
    """Views per image over all groups."""
    return sum(group.count for group in groups)


def views_of_role(groups: Sequence[ViewGroup], role: ViewRole) -> list[int]:
    """Positions (in the flat view list the method receives) of the views with ``role``."""
    positions: list[int] = []
    start = 0
    for group in groups:
        if group.role == role:
            positions.extend(range(start, start + group.count))
        start += group.count
    return positions


TWO_VIEWS: tuple[ViewGroup, ...] = (ViewGroup(2),)
"""Two global views of the config's size: what BYOL, SimCLR, VICReg, Barlow Twins and MoCo v3 take."""
