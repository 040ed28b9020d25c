"""Images in memory, random training patches and whole-image evaluation, for restoration and segmentation.

Restoration and segmentation networks (2D and 3D) train on random patches of ``--patch_size`` and are validated
and tested on whole images, which the Lightning module tiles itself (:mod:`innerssl.data.tiling`). This module
provides the data side:

- :func:`load_split` reads a split of a :class:`~innerssl.data.biapy_layout.BiaPyLayout` into memory as
  :class:`LoadedImage` (normalised images; raw targets: normalised restoration images or int64 label maps).
- :class:`RandomPatchDataset`: ``patches_per_image`` random patches per image per epoch, each drawn from a seed
  of ``(seed, epoch, index)`` alone, so the same epoch and index give the same patch on any worker, in a
  resumed run too, while epochs differ.
- :class:`WholeImageDataset`: one whole image per item, with its name and index, for batch size 1.
- :class:`PatchDataModule`: the loaders; :class:`PatchSampler` forwards Lightning's ``set_epoch`` and hands each
  item its epoch with the index, so worker processes (which hold their own copy of the dataset) draw the
  patches of the right epoch.

Memory: every image is held in memory, as BiaPy does; restoration and segmentation datasets in this workflow
are small (tens to hundreds of images). Larger sets need the decode cache (:mod:`innerssl.data.cache`), which
this module does not use.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

from innerssl.data.biapy_layout import (
    NIFTI_SUFFIXES,
    SPLITS,
    BiaPyLayout,
    ImageInfo,
    Sample,
    convert_channels,
    file_suffix,
    read_image,
)
from innerssl.data.normalisation import Normalisation
from innerssl.data.tiling import check_patch_size, extract_patches, random_patch_origins
from innerssl.data.volume_preprocessing import VolumeGeometry, VolumePreprocessing, read_affine
from innerssl.errors import BadImageFile, UserError

if TYPE_CHECKING:
    from innerssl.data.datasets.base import BadFileLog

logger = logging.getLogger(__name__)

__all__ = [
    "LoadedImage",
    "PatchDataModule",
    "PatchSampler",
    "RandomPatchDataset",
    "WholeImageDataset",
    "collate_whole_images",
    "load_split",
    "parse_label_mapping",
]

TargetKind = Literal["none", "image", "labels"]
TARGET_KINDS: tuple[TargetKind, ...] = ("none", "image", "labels")
LABEL_MAPPING_FLAG = "--label_mapping"
FOREGROUND_FLAG = "--foreground_fraction"
NUM_TRAINING_IMAGES_FLAG = "--num_training_images"
PROGRESS_MIN_IMAGES = 20
"""Loading more images than this shows a progress bar."""
MAX_VALUES_IN_MESSAGE = 10


@dataclass(frozen=True)
class LoadedImage:
    """One sample in memory: the normalised image and its raw target (see :func:`load_split`)."""

    name: str
    image: Tensor
    """(C, *spatial) float32, normalised."""
    target: Tensor | None
    """float32 (C_t, *spatial) for restoration targets, int64 (*spatial) label map for segmentation, or None."""
    source: Path
    suffix: str
    """The image file's suffix as written (".tif", ".nii.gz", ".png"), to write predictions in the same format."""
    dtype_max: float | None
    """The image file's full-intensity value (ImageInfo.dtype_max), to write predictions back in its range."""
    target_source: Path | None = None
    """The target's file (masks, restoration targets), where the sample has one and the run reads it."""
    geometry: VolumeGeometry | None = None
    """How --orientation / --spacing / --crop_foreground / --pad_to_patch changed the grid (None: not at all);
    :meth:`VolumeGeometry.restore` takes a prediction back to the source file's grid."""
    affine: tuple[tuple[float, ...], ...] | None = None
    """The source's voxel (z, y, x) -> RAS mm map where it has one (NIfTI, DICOM volumes: ImageInfo.affine)."""

    def prediction_format(self) -> tuple[str, Path | None, np.ndarray | None]:
        """How a prediction of this image is written: (the suffix whose format it takes, the NIfTI whose affine it
        copies, else the NIfTI voxel affine to write). A DICOM volume's prediction is a NIfTI in its world
        coordinates (viewers overlay it on the series), not a TIFF without any."""
        if file_suffix(self.source.name) in NIFTI_SUFFIXES:
            return self.suffix, self.source, None
        if self.affine is not None and self.image.ndim == 4:
            zyx = np.asarray(self.affine, dtype=np.float64)
            return NIFTI_SUFFIXES[0], None, zyx[:, [2, 1, 0, 3]]  # NIfTI voxels are (i, j, k) = (x, y, z)
        return self.suffix, None, None

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.image.shape[1:])


# --- loading ---------------------------------------------------------------------------------------------------


def parse_label_mapping(text: str) -> dict[int, int]:
    """``--label_mapping`` 'source:class,...' (e.g. '0:0,1:1,2:1') as {source value: class}."""
    mapping: dict[int, int] = {}
    hint = f"{LABEL_MAPPING_FLAG}={text!r} must be 'value:class' pairs separated by commas, e.g. 0:0,1:1,2:1"
    parts = [part.strip() for part in text.split(",")] if text.strip() else []
    if not parts:
        raise UserError(hint)
    for part in parts:
        source, colon, target = part.partition(":")
        try:
            key, value = int(source.strip()), int(target.strip())
        except ValueError:
            raise UserError(hint) from None
        if not colon or value < 0:
            raise UserError(hint + " (classes are whole numbers from 0)")
        if key in mapping:
            raise UserError(f"{LABEL_MAPPING_FLAG}={text!r} maps the value {key} twice: give each value once")
        mapping[key] = value
    return mapping


def load_split(
    layout: BiaPyLayout,
    split: str,
    normalisation: Normalisation,
    target_kind: TargetKind,
    label_mapping: dict[int, int] | None = None,
    bad_file_log: BadFileLog | None = None,
    preprocessing: VolumePreprocessing | None = None,
) -> list[LoadedImage]:
    """The samples of ``split`` read into memory, in the layout's order.

    Images are normalised with each file's ``dtype_max``. Targets: ``"image"`` normalised like images,
    ``"labels"`` a single-channel int64 label map (``label_mapping`` source value -> class, else ``> 0`` is
    foreground, so instance masks become 0/1), ``"none"`` not read. A file that fails to decode is skipped with
    its sample, logged, recorded in ``layout.bad_files`` and ``bad_file_log``; it never stops the run.
    ``preprocessing`` (MONAI's deterministic steps, :mod:`innerssl.data.volume_preprocessing`) runs here, once
    per image, on images and targets alike; inactive or None, loading is unchanged.
    """
    if target_kind not in TARGET_KINDS:
        raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {target_kind!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    samples = layout.splits[split]
    loaded: list[LoadedImage] = []
    skipped = 0
    progress = tqdm(samples, desc=f"Loading {split} images", unit="image", disable=len(samples) <= PROGRESS_MIN_IMAGES)
    for sample in progress:
        try:
            pixels, info = read_image(sample.image_path, layout.spatial_dims)
            raw_target, target_info = None, None
            if target_kind != "none" and sample.target_path is not None:
                raw_target, target_info = read_image(sample.target_path, layout.spatial_dims)
        except BadImageFile as error:
            skipped += 1
            layout.bad_files[error.path] = error.reason
            if bad_file_log is not None:
                bad_file_log.record(error)
            else:
                logger.warning("Skipping %s", error)
            continue
        pixels = convert_channels(pixels, layout.channels)  # --in_channels: gray <-> RGB, as the layout allowed
        target = None
        if raw_target is not None and target_info is not None:
            assert sample.target_path is not None
            if raw_target.shape[1:] != pixels.shape[1:]:
                raise UserError(
                    f"{sample.target_path} has the spatial shape {raw_target.shape[1:]} but its image "
                    f"{sample.image_path} has {pixels.shape[1:]}: a target must cover its image pixel for pixel"
                )
            check_same_grid(sample.image_path, info.affine, sample.target_path, target_info.affine)
        geometry = None
        if preprocessing is not None and preprocessing.active:
            target_pair = None if raw_target is None or target_info is None else (raw_target, target_info)
            image, target, geometry = _preprocessed(
                preprocessing, sample, (pixels, info), target_pair, target_kind, normalisation, label_mapping
            )
        else:
            image = torch.from_numpy(normalisation(pixels, info.dtype_max))
            if raw_target is not None and target_info is not None:
                assert sample.target_path is not None
                if target_kind == "image":
                    target = torch.from_numpy(normalisation(raw_target, target_info.dtype_max))
                else:
                    target = torch.from_numpy(_label_map(raw_target, sample.target_path, label_mapping))
        name = sample.image_path.name
        suffix = name[len(name) - len(file_suffix(name)) :]
        target_source = sample.target_path if target is not None else None
        loaded.append(
            LoadedImage(
                sample.name,
                image,
                target,
                sample.image_path,
                suffix,
                info.dtype_max,
                target_source,
                geometry,
                info.affine,  # predictions are restored to the source's grid (VolumeGeometry.restore)
            )
        )
    if skipped:
        logger.warning("%s split: %d of %d sample(s) could not be read and are left out", split, skipped, len(samples))
    return loaded


AFFINE_TOLERANCE_MM = 1e-3
"""How far the affines of an image and its target may differ (in mm, per matrix entry): rounding in the files'
float32 headers, not another placement."""


def check_same_grid(
    image_path: Path,
    image_affine: tuple[tuple[float, ...], ...] | None,
    target_path: Path,
    target_affine: tuple[tuple[float, ...], ...] | None,
) -> None:
    """Refuse a target whose voxels sit elsewhere in space than its image's (another orientation, spacing or
    origin, e.g. a label exported from another series): with equal shapes it would silently pair wrong voxels.
    Files without an affine (TIFF, PNG) are paired by shape alone."""
    if image_affine is None or target_affine is None:
        return
    difference = np.abs(np.asarray(image_affine, dtype=np.float64) - np.asarray(target_affine, dtype=np.float64))
    if difference.max() > AFFINE_TOLERANCE_MM:
        raise UserError(
            f"{target_path} and its image {image_path} have the same shape but different affines (largest "
            f"difference {difference.max():.3g} mm): resample the label onto the image's grid (e.g. MONAI's "
            "ResampleToMatch) or pair it with the image it was drawn on"
        )


def _preprocessed(
    preprocessing: VolumePreprocessing,
    sample: Sample,
    image: tuple[np.ndarray, ImageInfo],
    raw_target: tuple[np.ndarray, ImageInfo] | None,
    target_kind: TargetKind,
    normalisation: Normalisation,
    label_mapping: dict[int, int] | None,
) -> tuple[Tensor, Tensor | None, VolumeGeometry]:
    """(image, target, geometry) of one sample through ``preprocessing`` (see :func:`load_split`)."""
    target, target_intensity = None, None
    if raw_target is not None:
        assert sample.target_path is not None
        values, target_info = raw_target
        if target_kind == "image":
            target, target_intensity = values, lambda array: normalisation(array, target_info.dtype_max)
        else:
            target = _label_map(values, sample.target_path, label_mapping)
    pixels, info = image
    result = preprocessing.apply(
        pixels,
        lambda array: normalisation(array, info.dtype_max),
        target,
        target_intensity,
        read_affine(sample.image_path) if preprocessing.needs_affine else None,
    )
    return result.image, result.target, result.geometry


def _label_map(raw: np.ndarray, path: Path, mapping: dict[int, int] | None) -> np.ndarray:
    """A (1, *spatial) target as an int64 (*spatial) class map (see :func:`load_split`)."""
    if raw.shape[0] != 1:
        raise UserError(
            f"{path} has {raw.shape[0]} channels, but segmentation labels are one label map per image: store one "
            "channel (0 background, 1.. classes or instances)"
        )
    values = raw[0]
    if mapping is None:
        return (values > 0).astype(np.int64)
    if values.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise UserError(f"{path} holds non-integer label values, which {LABEL_MAPPING_FLAG} cannot map: store integers")
    present = np.unique(values).astype(np.int64)
    unknown = [int(value) for value in present if int(value) not in mapping]
    if unknown:
        shown = ", ".join(str(value) for value in unknown[:MAX_VALUES_IN_MESSAGE])
        raise UserError(
            f"{path} holds the label value(s) {shown}{' ...' if len(unknown) > MAX_VALUES_IN_MESSAGE else ''}, "
            f"which {LABEL_MAPPING_FLAG} does not map: add them (value:class) to {LABEL_MAPPING_FLAG}"
        )
    classes = np.array([mapping[int(value)] for value in present], dtype=np.int64)
    return classes[np.searchsorted(present, values.astype(np.int64))]  # sparse values: no table up to the maximum


# --- datasets --------------------------------------------------------------------------------------------------


def _item_seed(*parts: int) -> int:
    """A 63-bit seed from the parts alone (numpy's SeedSequence mixes them), for torch.Generator.manual_seed."""
    state = np.random.SeedSequence([int(part) & 0xFFFFFFFF for part in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class RandomPatchDataset(Dataset):
    """``patches_per_image`` random patches of ``patch_size`` per image per epoch; item ``i`` is a patch of image
    ``i // patches_per_image``, drawn from a generator seeded with ``(seed, epoch, i)``.

    Items are ``{"image": (C, *patch), "target": ...}`` (no "target" key without targets; a label map's patch is
    ``(*patch)``). An index may be an ``(epoch, index)`` pair, as :class:`PatchSampler` gives, else
    :meth:`set_epoch`'s epoch is used. Axes shorter than the patch are reflection-padded at their end
    (:func:`~innerssl.data.tiling.extract_patches`). ``flip``: each spatial axis is flipped with probability
    1/2, image and target alike. ``foreground_fraction`` (label targets only): that share of the patches (on
    average; each patch decides by its own draw) is centred on a random foreground voxel, the rest uniform.
    """

    def __init__(
        self,
        images: Sequence[LoadedImage],
        patch_size: Sequence[int] | int,
        patches_per_image: int,
        seed: int = 0,
        flip: bool = False,
        foreground_fraction: float = 0.0,
    ) -> None:
        if not images:
            raise UserError("There are no training images to draw patches from: check the dataset's train split")
        if patches_per_image < 1:
            raise UserError(f"--patches_per_image must be at least 1, got {patches_per_image}")
        if not 0 <= foreground_fraction <= 1:
            raise UserError(f"{FOREGROUND_FLAG}={foreground_fraction} must be a fraction in [0, 1], e.g. 0.5")
        self.images = list(images)
        self.spatial_dims = self.images[0].image.ndim - 1
        self.patch_size = check_patch_size(patch_size, self.spatial_dims)
        if foreground_fraction > 0 and not all(_is_label_map(image) for image in self.images):
            raise UserError(
                f"{FOREGROUND_FLAG}={foreground_fraction} centres patches on labelled foreground, so it needs "
                f"segmentation labels for every training image: set {FOREGROUND_FLAG}=0"
            )
        self.patches_per_image = patches_per_image
        self.seed = seed
        self.flip = flip
        self.foreground_fraction = foreground_fraction
        self.epoch = 0
        self._foreground: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose patches plain integer indices give."""
        self.epoch = epoch

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Tensor]:
        epoch, index = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (self.epoch, int(item))
        if not 0 <= index < len(self):
            raise IndexError(f"patch index {index} out of range for {len(self)} patches")
        which = index // self.patches_per_image
        loaded = self.images[which]
        generator = torch.Generator().manual_seed(_item_seed(self.seed, epoch, index))
        origin = self._origin(which, loaded, generator)
        image = extract_patches(loaded.image, origin, self.patch_size)[0]
        target = None
        if loaded.target is not None:
            if _is_label_map(loaded):
                target = extract_patches(loaded.target[None], origin, self.patch_size)[0, 0]
            else:
                target = extract_patches(loaded.target, origin, self.patch_size)[0]
        if self.flip:
            axes = [axis for axis, coin in enumerate(torch.rand(self.spatial_dims, generator=generator)) if coin < 0.5]
            if axes:
                image = image.flip([1 + axis for axis in axes])
                if target is not None:
                    offset = 0 if target.ndim == self.spatial_dims else 1
                    target = target.flip([offset + axis for axis in axes])
        return {"image": image} if target is None else {"image": image, "target": target}

    def _origin(self, which: int, loaded: LoadedImage, generator: torch.Generator) -> Tensor:
        """(1, spatial_dims) origin: uniform, or (with the foreground share) centred on a foreground voxel."""
        shape = loaded.spatial_shape
        centred = self.foreground_fraction > 0 and float(torch.rand((), generator=generator)) < self.foreground_fraction
        if centred:
            foreground = self._foreground_voxels(which, loaded)
            if len(foreground):
                voxel = foreground[int(torch.randint(len(foreground), (), generator=generator))]
                highest = torch.tensor([max(size - side, 0) for size, side in zip(shape, self.patch_size)])
                half = torch.tensor([side // 2 for side in self.patch_size])
                return torch.minimum((voxel.long() - half).clamp(min=0), highest)[None]
        return random_patch_origins(shape, self.patch_size, 1, generator)

    def _foreground_voxels(self, which: int, loaded: LoadedImage) -> Tensor:
        """The image's foreground coordinates (N, spatial_dims), found once per image (per worker)."""
        if which not in self._foreground:
            assert loaded.target is not None
            self._foreground[which] = torch.nonzero(loaded.target > 0).to(torch.int32)
            if not len(self._foreground[which]):
                logger.warning("%s has no foreground: its patches are drawn uniformly", loaded.source)
        return self._foreground[which]


def _is_label_map(loaded: LoadedImage) -> bool:
    return (
        loaded.target is not None and loaded.target.dtype == torch.int64 and loaded.target.ndim == loaded.image.ndim - 1
    )


class WholeImageDataset(Dataset):
    """Whole images for validation and testing (batch size 1; the module tiles them):
    ``{"image": (C, *spatial), "target": ... (when present), "name": str, "index": int}``."""

    def __init__(self, images: Sequence[LoadedImage]) -> None:
        self.images = list(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        loaded = self.images[index]
        item: dict[str, Any] = {"image": loaded.image, "name": loaded.name, "index": index}
        if loaded.target is not None:
            item["target"] = loaded.target
        return item


def collate_whole_images(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the tensors of same-shaped items (batch size 1 in practice); names stay a list of strings."""
    batch: dict[str, Any] = {
        "image": torch.stack([item["image"] for item in items]),
        "name": [item["name"] for item in items],
        "index": torch.tensor([item["index"] for item in items]),
    }
    if all("target" in item for item in items):
        batch["target"] = torch.stack([item["target"] for item in items])
    return batch


class PatchSampler(DistributedSampler):
    """Each epoch, a permutation of the patch indices seeded with ``(seed, epoch)``, as ``(epoch, index)`` pairs.

    Lightning calls :meth:`set_epoch` on the training loader's sampler every epoch; the epoch goes to the dataset
    too and, with each index, to worker processes whose dataset copies never see ``set_epoch``. It is a
    DistributedSampler so that Lightning keeps it under DDP instead of wrapping it: process ``rank`` takes every
    ``num_replicas``-th index of the permutation (padded by repetition to a multiple of ``num_replicas``).
    """

    def __init__(self, dataset: RandomPatchDataset, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.patches = dataset

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.patches.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        generator = torch.Generator().manual_seed(_item_seed(self.seed, self.epoch, 0x5A3))
        order = torch.randperm(len(self.patches), generator=generator).tolist()
        order = (order * math.ceil(self.total_size / len(order)))[: self.total_size]  # DDP: pad by repetition
        return iter([(self.epoch, index) for index in order[self.rank : self.total_size : self.num_replicas]])


class PatchDataModule(pl.LightningDataModule):
    """Random training patches and whole validation / test images of in-memory :class:`LoadedImage` lists.

    ``num_training_images`` keeps the first N training images of a permutation seeded with ``seed`` (few-label
    experiments); ``patches_per_epoch`` replaces ``patches_per_image`` by ``ceil(patches_per_epoch / images)``, so
    that fewer images do not mean fewer steps. Training batches are ``{"image": (B, C, *patch), "target": ...}``;
    validation and test batches come from :class:`WholeImageDataset` one image at a time with their names. Images
    are held in memory (see the module doc).
    """

    def __init__(
        self,
        train: list[LoadedImage],
        val: list[LoadedImage],
        test: list[LoadedImage],
        patch_size: tuple[int, ...],
        patches_per_image: int,
        batch_size: int,
        num_workers: int,
        seed: int,
        flip: bool = True,
        foreground_fraction: float = 0.0,
        num_training_images: int | None = None,
        patches_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if not train:
            raise UserError("The dataset has no readable training images: check its train split")
        if batch_size < 1:
            raise UserError(f"--batch_size must be at least 1, got {batch_size}")
        if num_training_images is not None:
            train = _first_in_seeded_order(train, num_training_images, seed)
        if patches_per_epoch is not None:
            # The same number of steps whatever the number of training images (few-label comparisons).
            patches_per_image = max(1, math.ceil(patches_per_epoch / len(train)))
        self.spatial_dims = train[0].image.ndim - 1
        self.in_channels = int(train[0].image.shape[0])
        self.patch_size = check_patch_size(patch_size, self.spatial_dims)
        self.patches_per_image = patches_per_image
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.num_training_images = num_training_images
        self.used_images: dict[str, list[LoadedImage]] = {"train": list(train), "val": list(val), "test": list(test)}
        self.layout_summary = {split: len(images) for split, images in self.used_images.items()}
        self.train_dataset = RandomPatchDataset(
            train, self.patch_size, patches_per_image, seed, flip, foreground_fraction
        )

    def describe(self) -> str:
        """One line for the log: split sizes, patch settings and image geometry."""
        splits = ", ".join(f"{split} {count}" for split, count in self.layout_summary.items())
        few = f" (first {self.num_training_images} in seeded order)" if self.num_training_images is not None else ""
        return (
            f"{self.spatial_dims}D images, {self.in_channels} channel(s): {splits}{few}; {self.patches_per_image} "
            f"patch(es) of {'x'.join(map(str, self.patch_size))} per training image per epoch "
            f"({len(self.train_dataset)} per epoch), batch size {self.batch_size}, flips "
            f"{'on' if self.train_dataset.flip else 'off'}, "
            f"foreground fraction {self.train_dataset.foreground_fraction:g}"
        )

    def _replicas(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        return (int(trainer.world_size), int(trainer.global_rank)) if trainer is not None else (1, 0)

    def train_sampler(self) -> PatchSampler:
        num_replicas, rank = self._replicas()
        return PatchSampler(self.train_dataset, self.seed, num_replicas, rank)

    def train_dataloader(self) -> DataLoader:
        sampler = self.train_sampler()
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=len(sampler) >= self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _whole_image_loader(self, images: list[LoadedImage]) -> DataLoader:
        return DataLoader(
            WholeImageDataset(images),
            batch_size=1,
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=collate_whole_images,
            pin_memory=torch.cuda.is_available(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._whole_image_loader(self.used_images["val"])

    def test_dataloader(self) -> DataLoader:
        return self._whole_image_loader(self.used_images["test"])


def _first_in_seeded_order(images: list[LoadedImage], count: int, seed: int) -> list[LoadedImage]:
    """The first ``count`` images of a permutation of the name-sorted images seeded with ``seed``."""
    if isinstance(count, bool) or not 1 <= count <= len(images):
        raise UserError(
            f"{NUM_TRAINING_IMAGES_FLAG}={count} must be between 1 and the {len(images)} training image(s) available: "
            f"lower {NUM_TRAINING_IMAGES_FLAG} or leave it out to use all"
        )
    ordered = sorted(images, key=lambda loaded: loaded.name)
    chosen = np.random.default_rng(seed).permutation(len(ordered))[:count]
    return [ordered[int(index)] for index in chosen]
