"""How images travel from a dataset to the encoder: how they are stored, and where they are augmented.

Two independent choices, both container parameters:

- Storage (:class:`ImageStorage`): with ``decode_cache`` every split is decoded once into a memory-mapped
  cache of fixed-size integer images (:mod:`innerssl.data.cache`) that loader workers read at memcpy speed,
  whole batches at a time. Without it, images are decoded on every access, as the datasets return them
  (per-sample augmentation) or fitted to the same fixed-size integer images (batched augmentation).
- Augmentation (:class:`ImageStream`): ``augment_on_device`` applies the YAML config to whole batches on the
  training device after Lightning moved them there (:mod:`innerssl.augment.batched`), with per-sample random
  parameters; otherwise the per-sample torchvision pipeline runs in the loader workers
  (:mod:`innerssl.augment.per_sample`), for transforms the batched path lacks.

Either way the encoder receives float32 ``(B, in_channels, H, W)`` batches in [0, 1], and SSL batches carry
the views the method declared (:class:`~innerssl.augment.views.ViewGroup`: two views of the config's size for
most methods, DINO's global and local crops), so the modules and monitors do not know which path produced them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from innerssl.augment.batched import BatchedAugmentation, build_batched_transform
from innerssl.augment.config import AugmentationConfig
from innerssl.augment.per_sample import MultiViews, build_per_sample_transform
from innerssl.augment.views import ViewGroup, total_views, with_crop_scale
from innerssl.data.cache import CacheSettings, FixedSizeDataset, cached_dataset, resolve_settings
from innerssl.data.datasets.base import DatasetSplits, Split

logger = logging.getLogger(__name__)

SPLIT_NAMES: tuple[Split, ...] = ("train", "val", "test")
MAX_CONSECUTIVE_BAD_ITEMS = 100
"""A loader gives up (rather than spin) when this many images in a row cannot be read."""

Transform = Callable[[torch.Tensor], Any]


class TransformedDataset(Dataset):
    """Applies ``transform`` to each image; items a dataset could not decode (None) are replaced by the next
    decodable one, so batches keep their size. The dataset itself logs and counts the bad files."""

    def __init__(self, dataset: Dataset, transform: Transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        for offset in range(MAX_CONSECUTIVE_BAD_ITEMS):
            item = self.dataset[(index + offset) % len(self)]
            if item is not None:
                image, label = item
                return self.transform(image), label
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BAD_ITEMS} consecutive images could not be read; see the bad-file log of the run"
        )


@dataclass(frozen=True)
class ImageStorage:
    """Where the images a loader reads come from."""

    settings: CacheSettings
    """Slot size, fit, dtype and channels of the stored images (and the cache folder when ``decode_cache``)."""
    decode_cache: bool = True
    """Decode once into a memory-mapped cache; False decodes on every access."""
    fixed_size: bool = True
    """Without the cache: fit images to the fixed-size integer slots anyway (needed by batched augmentation,
    which stacks whole batches); False returns the datasets' own float images."""

    def store(self, dataset: Dataset, description: str) -> Dataset:
        """The dataset as the loaders read it (building or opening its cache where that is on)."""
        if self.decode_cache:
            return cached_dataset(dataset, self.settings, description)
        if not self.fixed_size:
            return dataset
        settings = resolve_settings(dataset, self.settings, description)  # the cache's rule for unset sizes
        assert settings.image_size is not None and settings.channels is not None
        return FixedSizeDataset(dataset, settings.image_size, settings.fit, settings.dtype, settings.channels)

    def store_splits(self, splits: DatasetSplits, name: str, which: tuple[Split, ...] = SPLIT_NAMES) -> DatasetSplits:
        """The splits with the datasets of ``which`` replaced by their stored form (the others, unused by the
        run, are left alone rather than decoded); labels and label info unchanged."""
        stored = {
            split: self.store(dataset, f"{name} {split}")
            for split in which
            if (dataset := getattr(splits, split)) is not None
        }
        return replace(splits, **stored)


class ImageStream:
    """One augmentation config on the way to the encoder: per sample in the loader, or per batch on the device.

    ``views``: ``1`` gives one augmented image per item (batches of images: monitors, classifiers). A sequence of
    :class:`~innerssl.augment.views.ViewGroup` gives an SSL method's views: every group's views, with its size
    and crop scale, the groups in order; batches then hold a sequence of view batches, one per view, even for a
    single view. An int ``n >= 2`` is short for ``(ViewGroup(n),)``: ``n`` views of the config's size.

    Use :meth:`loader_dataset` for what the DataLoader reads and :meth:`apply` on each ``(images, labels)`` batch
    once it is on the device (a no-op for the per-sample path, whose loader already yields the encoder's input).
    """

    def __init__(
        self,
        config: AugmentationConfig,
        in_channels: int,
        augment_on_device: bool,
        views: int | Sequence[ViewGroup] = 1,
    ) -> None:
        self.config = config
        self.view_groups: tuple[ViewGroup, ...] | None = _view_groups(views)
        """The views of every image (None: one image per item, not a tuple of views)."""
        self.batched: BatchedAugmentation | None = None
        self.per_sample: Transform | None = None
        if augment_on_device:
            self.batched = build_batched_transform(config, in_channels)
        elif self.view_groups is None:
            self.per_sample = build_per_sample_transform(config, in_channels)
        else:
            transforms = [
                build_per_sample_transform(with_crop_scale(config, group.crop_scale), in_channels, group.size)
                for group in self.view_groups
            ]
            self.per_sample = MultiViews([(t, group.count) for t, group in zip(transforms, self.view_groups)])

    @property
    def on_device(self) -> bool:
        return self.batched is not None

    @property
    def views(self) -> int:
        """Views per image (1 for a stream of plain images)."""
        return 1 if self.view_groups is None else total_views(self.view_groups)

    def loader_dataset(self, stored: Dataset) -> Dataset:
        """What the DataLoader reads: undecodable items are replaced by the next readable one either way."""
        if self.per_sample is not None:
            return TransformedDataset(stored, self.per_sample)
        if callable(getattr(stored, "__getitems__", None)):
            return stored  # the decode cache reads whole batches at once and replaces bad items itself
        return TransformedDataset(stored, _unchanged)

    def to_encoder(self, images: torch.Tensor) -> Any:
        """Augmented float images (a tuple of view batches for a stream of views) from a batch on the device.

        Each view group is one pass of the batched augmentation over the batch repeated ``count`` times, with
        the group's size and crop scale, drawn from the one random stream of the config.
        """
        if self.batched is None:
            return images
        if self.view_groups is None:
            return self.batched(images)
        return tuple(
            view
            for group in self.view_groups
            for view in self.batched.views(images, group.count, group.size, group.crop_scale)
        )

    def apply(self, batch: Any) -> Any:
        """``(images, labels)`` -> ``(to_encoder(images), labels)``."""
        if self.batched is None:
            return batch
        images, labels = batch
        return self.to_encoder(images), labels

    def reseed(self, seed: int) -> None:
        if self.batched is not None:
            self.batched.reseed(seed)


def _view_groups(views: int | Sequence[ViewGroup]) -> tuple[ViewGroup, ...] | None:
    if isinstance(views, int):
        if isinstance(views, bool) or views < 1:
            raise ValueError(f"views must be a positive number of views or a sequence of view groups, got {views!r}")
        return None if views == 1 else (ViewGroup(views),)
    groups = tuple(views)
    if not groups or not all(isinstance(group, ViewGroup) for group in groups):
        raise ValueError(f"views must be a non-empty sequence of ViewGroup, got {views!r}")
    return groups


def _unchanged(image: torch.Tensor) -> torch.Tensor:
    return image


def stream_seed(seed: int, rank: int, stream_index: int) -> int:
    """Independent, reproducible seeds for every (run seed, process, stream): DDP ranks must not draw the
    same augmentations, and a run's SSL views must not be correlated with its linear-head augmentations."""
    return int(np.random.SeedSequence([seed, rank, stream_index]).generate_state(1)[0])
