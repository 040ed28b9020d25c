"""Decode once, read at memcpy speed: a memory-mapped cache of fixed-size integer images.

Decoding a 1024 px PNG takes ~18 ms on a CPU core and SSL training reads every image every epoch. The cache
decodes each image of a dataset once, fits it into a square slot (:func:`fit_image`: resize + center crop,
or resize + zero pad), stores it as uint8 / uint16 (:func:`to_storage`) in one ``.npy`` file and serves it
through a read-only memory map (:class:`CachedImageDataset`). Reads are then a copy out of the page cache,
memory stays bounded by what the kernel keeps mapped (not by the dataset size), and whole batches come out
of one fancy-index call (``__getitems__``, which torch's DataLoader uses for batched fetching).

Layout: ``<root>/<key>/`` holds ``images.npy`` (N, C, S, S), ``index.json`` (per item: path, label,
original height and width, ok flag, reason when bad), ``settings.json`` and the completion marker
``complete``. The key is the sha256 of the dataset's ``cache_fingerprint()`` (its files' paths, sizes,
modification times and labels, and the reader's settings) and of the cache settings, so touching a file,
relabelling, changing the file list or a setting gives a new folder, while the same inputs reuse the
existing one without decoding anything. A build happens under a cross-process file lock
(``<root>/<key>.lock``), so DataLoader workers, DDP ranks and concurrent runs on one machine build once;
it writes into a temporary folder that is renamed into place when complete, so a crashed build never leaves
a half cache that is used later.

Undecodable files get a zero slot and are marked bad with their reason; every run that opens the cache
reports them to the source dataset's bad-file log. ``__getitem__`` returns None for them (as the datasets
do) and ``__getitems__`` replaces them by the next decodable item so batches keep their size.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F
from tqdm import tqdm

from innerssl.augment.per_sample import LUMINANCE_WEIGHTS, ToChannels
from innerssl.data.datasets.base import BadFileLog, ImageRecord, LabeledSubset, label_to_python
from innerssl.errors import BadImageFile, UserError

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
"""Part of every key: bump it when the layout or the pixel pipeline changes, so old caches are not reused."""
FIT_MODES = ("crop", "pad")
STORAGE_TYPES: dict[str, tuple[type[np.integer], torch.dtype]] = {
    "uint8": (np.uint8, torch.uint8),
    "uint16": (np.uint16, torch.uint16),
}
"""Storage dtype name -> (numpy dtype of the .npy file, torch dtype of the tensors read from it)."""
SUPPORTED_CHANNELS = (1, len(LUMINANCE_WEIGHTS))
"""Stored channel counts: gray, or RGB (the conversions :class:`ToChannels` makes between them)."""

IMAGES_FILE = "images.npy"
INDEX_FILE = "index.json"
SETTINGS_FILE = "settings.json"
COMPLETE_MARKER = "complete"
TEMPORARY_SUFFIX = ".building-"
"""Temporary build folders are ``<root>/.<key>.building-<random>``; leftovers of crashed builds are removed."""
LOCK_SUFFIX = ".lock"
FLUSH_EVERY = 512
"""Images written between flushes of the memory map during a build, so dirty pages are written back steadily."""
BYTES_PER_MB = 1_000_000
FOLDER_MODE = 0o777
"""Permissions of a cache folder before the umask, as ``mkdir`` would create it."""
NO_LABEL = -1


@dataclass(frozen=True)
class CacheSettings:
    """Where caches live and how images are stored in them."""

    root: Path
    """Folder holding all caches; each cache is ``root / <key> /``."""
    image_size: int | None = None
    """Side of the square slot; None: the first readable image's shorter side."""
    fit: Literal["crop", "pad"] = "crop"
    """crop: shorter side -> image_size, then center crop of the longer side (the per-sample preprocess's
    resize + center crop); pad: longer side -> image_size, then zero padding of the shorter (nothing cut)."""
    dtype: Literal["uint8", "uint16"] = "uint8"
    channels: int | None = None
    """None: the first readable image's channels; images with other channel counts are converted."""
    num_workers: int = 0
    """Decoding processes for a build (0: decode in this process)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        check_fit_and_dtype(self.fit, self.dtype)
        if self.image_size is not None and (isinstance(self.image_size, bool) or self.image_size < 1):
            raise UserError(
                f"Decode-cache image size {self.image_size!r} is invalid: choose a positive number of pixels"
            )
        if self.channels is not None and self.channels not in SUPPORTED_CHANNELS:
            raise UserError(f"Decode-cache channels {self.channels!r} are not supported: choose 1 (gray) or 3 (RGB)")
        if self.num_workers < 0:
            raise UserError(f"Decode-cache num_workers {self.num_workers} is negative: choose 0 or more processes")


def check_fit_and_dtype(fit: str, dtype: str) -> None:
    """UserError for an unknown fit mode or storage dtype."""
    if fit not in FIT_MODES:
        raise UserError(f"Decode-cache fit {fit!r} is unknown: choose one of {', '.join(FIT_MODES)}")
    if dtype not in STORAGE_TYPES:
        raise UserError(f"Decode-cache dtype {dtype!r} is unknown: choose one of {', '.join(STORAGE_TYPES)}")


# --- pixels ------------------------------------------------------------------------------------------------


def fit_image(image: torch.Tensor, size: int, fit: str) -> torch.Tensor:
    """Float ``(C, H, W)`` -> float ``(C, size, size)``: bilinear antialiased resize, then center crop or pad.

    ``crop`` resizes the shorter side to ``size`` (the longer side as torchvision's ``Resize(size)`` rounds
    it) and center-crops, exactly as the per-sample preprocess ``Resize(size)`` + ``CenterCrop(size)`` does;
    ``pad`` resizes the longer side to ``size`` and zero-pads the shorter one centrally (torchvision's
    ``center_crop`` convention). A side that already has the target length is not resampled.
    """
    if fit not in FIT_MODES:
        raise ValueError(f"fit must be one of {FIT_MODES}, got {fit!r}")
    height, width = int(image.shape[-2]), int(image.shape[-1])
    if fit == "crop":
        if min(height, width) != size:
            image = F.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    elif max(height, width) != size:
        scale = size / max(height, width)
        target = [max(1, round(height * scale)), max(1, round(width * scale))]
        image = F.resize(image, target, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return F.center_crop(image, [size, size])  # crops the longer side, or pads the shorter with zeros


def to_storage(image: torch.Tensor, dtype: str) -> torch.Tensor:
    """Float image in [0, 1] -> rounded integers of the storage dtype (full range: 255 or 65535)."""
    numpy_type, torch_type = STORAGE_TYPES[dtype]
    full_scale = float(np.iinfo(numpy_type).max)
    return image.clamp(0.0, 1.0).mul(full_scale).round_().to(torch_type)


def prepare_image(image: torch.Tensor, size: int, fit: str, dtype: str, channels: int) -> torch.Tensor:
    """What a slot of the cache holds for a decoded image: fitted, converted to ``channels``, as integers."""
    image = F.to_dtype(image, torch.float32, scale=True)
    return to_storage(ToChannels(channels)(fit_image(image, size, fit)), dtype).contiguous()


# --- what the source dataset offers ----------------------------------------------------------------------------


def dataset_name(dataset: Dataset, description: str) -> str:
    return description or type(dataset).__name__


def item_path(records: Sequence[ImageRecord] | None, index: int, name: str) -> Path:
    """The file of item ``index`` for messages: the record's path, else ``<name> item <index>``."""
    return records[index].path if records is not None else Path(f"{name} item {index}")


def decode_item(dataset: Dataset, index: int, name: str) -> tuple[torch.Tensor, Any]:
    """(float image, label) of item ``index``; raises BadImageFile with the reason when it cannot be decoded.

    Datasets with a ``decode`` method (ImageFileDataset) say why; for others an item that is None is bad
    without a stated reason.
    """
    decode = getattr(dataset, "decode", None)
    if callable(decode):
        return decode(index)
    item = dataset[index]
    if item is None:
        raise BadImageFile(item_path(getattr(dataset, "records", None), index, name), "the dataset could not decode it")
    return item


def raw_label(label: Any) -> int | tuple[float, ...]:
    """A label as datasets store it: an int class index, or a tuple of floats (multilabel)."""
    if isinstance(label, torch.Tensor | np.ndarray):
        if label.ndim == 0:
            return int(label.item())
        return tuple(float(value) for value in label.reshape(-1).tolist())
    if isinstance(label, tuple | list):
        return tuple(float(value) for value in label)
    return int(label)


def report_bad(dataset: Dataset, error: BadImageFile) -> None:
    """Append a bad file to the source dataset's bad-file log (which also logs it), or log it."""
    log = getattr(dataset, "bad_file_log", None)
    if isinstance(log, BadFileLog):
        log.record(error)
    else:
        logger.warning("Skipping %s", error)


def resolve_settings(dataset: Dataset, settings: CacheSettings, description: str = "") -> CacheSettings:
    """``settings`` with image_size and channels filled in from the first readable image where they are None."""
    if settings.image_size is not None and settings.channels is not None:
        return settings
    name = dataset_name(dataset, description)
    for index in range(len(dataset)):  # type: ignore[arg-type]
        try:
            image, _ = decode_item(dataset, index, name)
        except BadImageFile as error:
            report_bad(dataset, error)
            continue
        size = settings.image_size or min(int(image.shape[-2]), int(image.shape[-1]))
        channels = settings.channels or int(image.shape[-3])
        if channels not in SUPPORTED_CHANNELS:
            raise UserError(
                f"The first image of {name} has {channels} channels: set the decode cache's channels to 1 or 3"
            )
        return dataclasses.replace(settings, image_size=size, channels=channels)
    raise UserError(f"No image of {name} can be decoded: check its files (see the bad-file log of the run)")


def cache_key(fingerprint: Any, settings: CacheSettings) -> str:
    """sha256 of the format version, the dataset's fingerprint and the settings that change the pixels."""
    payload = {
        "version": CACHE_FORMAT_VERSION,
        "fingerprint": fingerprint,
        "image_size": settings.image_size,
        "fit": settings.fit,
        "dtype": settings.dtype,
        "channels": settings.channels,
    }
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- opening or building -----------------------------------------------------------------------------------


def cached_dataset(dataset: Dataset, settings: CacheSettings, description: str = "") -> Dataset:
    """The cache of ``dataset``: opened when it exists, built first otherwise.

    A torch ``Subset`` (e.g. a label-fraction :class:`LabeledSubset`) caches its parent and comes back as the
    same subset of the cached parent, so all subsets of a split share one cache. A dataset without
    ``cache_fingerprint()`` cannot be cached (a UserError says to switch the cache off).
    """
    if isinstance(dataset, Subset):
        parent = cached_dataset(dataset.dataset, settings, description)
        subset_type = LabeledSubset if isinstance(dataset, LabeledSubset) else Subset
        return subset_type(parent, list(dataset.indices))
    name = dataset_name(dataset, description)
    fingerprint = getattr(dataset, "cache_fingerprint", None)
    if not callable(fingerprint):
        raise UserError(
            f"{name} ({type(dataset).__name__}) cannot be decoded into a cache (it has no cache_fingerprint()): "
            "set --decode_cache=false"
        )
    settings = resolve_settings(dataset, settings, description)
    key = cache_key(fingerprint(), settings)
    folder = settings.root / key
    if not is_complete(folder):
        make_root(settings.root)
        with file_lock(settings.root / f"{key}{LOCK_SUFFIX}", name):
            if not is_complete(folder):  # another process may have built it while this one waited
                build_cache(dataset, settings, folder, name)
    cached = CachedImageDataset(folder, records=getattr(dataset, "records", None))
    if len(cached) != len(dataset):  # type: ignore[arg-type]
        raise RuntimeError(f"The decode cache {folder} holds {len(cached)} items, {name} has {len(dataset)}")  # type: ignore[arg-type]
    for error in cached.bad_files():
        report_bad(dataset, error)
    logger.info(
        "Decode cache of %s: %d images (%d bad), %d px %s %s, %d channel(s), in %s",
        name,
        len(cached),
        cached.num_bad,
        cached.image_size,
        settings.fit,
        cached.dtype,
        cached.channels,
        folder,
    )
    return cached


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file()


def make_root(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the decode-cache folder {root} ({error}): choose a writable folder") from None


@contextmanager
def file_lock(path: Path, name: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` across processes of this machine (released when the block ends)."""
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("Waiting for another process to finish the decode cache of %s (%s)", name, path)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass(frozen=True)
class DecodedItem:
    """What a decoding worker returns for one item."""

    index: int
    pixels: torch.Tensor | None
    """The prepared integer slot (C, S, S), None when the item is bad."""
    label: int | tuple[float, ...] | None
    height: int
    width: int
    ok: bool
    reason: str


class DecodingDataset(Dataset):
    """Item i of ``dataset`` decoded and prepared for its slot, for the build's DataLoader (one item per fetch)."""

    def __init__(self, dataset: Dataset, settings: CacheSettings, name: str) -> None:
        assert settings.image_size is not None and settings.channels is not None
        self.dataset = dataset
        self.size = settings.image_size
        self.fit = settings.fit
        self.dtype = settings.dtype
        self.channels = settings.channels
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> DecodedItem:
        try:
            image, label = decode_item(self.dataset, index, self.name)
        except BadImageFile as error:
            return DecodedItem(index, None, None, 0, 0, False, error.reason)
        height, width = int(image.shape[-2]), int(image.shape[-1])
        pixels = prepare_image(image, self.size, self.fit, self.dtype, self.channels)
        return DecodedItem(index, pixels, raw_label(label), height, width, True, "")


def keep_item(item: DecodedItem) -> DecodedItem:
    """The build loader's collate function: items pass unchanged (a module function, so workers can pickle it)."""
    return item


def build_cache(dataset: Dataset, settings: CacheSettings, folder: Path, name: str) -> None:
    """Decode every item of ``dataset`` into ``folder`` (call with the cache's lock held).

    Items are written into the memory map as they arrive, so the build holds a few images in memory
    whatever the dataset size. Everything goes into a temporary folder that is renamed to ``folder`` once
    complete, then the completion marker is written; leftovers of crashed builds are removed first.
    """
    assert settings.image_size is not None and settings.channels is not None
    root = folder.parent
    for leftover in [folder, *root.glob(f".{folder.name}{TEMPORARY_SUFFIX}*")]:
        if leftover.exists():  # only an interrupted build leaves these (the lock is held)
            logger.info("Removing the incomplete decode cache %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
    count = len(dataset)  # type: ignore[arg-type]
    if count == 0:
        raise UserError(f"{name} has no images to decode into the cache: check the dataset folder and its labels")
    shape = (count, settings.channels, settings.image_size, settings.image_size)
    numpy_type = STORAGE_TYPES[settings.dtype][0]
    reserve_space(root, int(np.prod(shape)) * np.dtype(numpy_type).itemsize, name)

    temporary = Path(tempfile.mkdtemp(prefix=f".{folder.name}{TEMPORARY_SUFFIX}", dir=root))
    os.chmod(temporary, FOLDER_MODE & ~current_umask())  # mkdtemp's folder is private; caches may be shared
    start = time.perf_counter()
    try:
        images = np.lib.format.open_memmap(temporary / IMAGES_FILE, mode="w+", dtype=numpy_type, shape=shape)
        allocate(temporary / IMAGES_FILE, name)
        index = decode_into(dataset, settings, images, name)
        images.flush()
        del images
        bad = [i for i, ok in enumerate(index["ok"]) if not ok]
        if len(bad) == count:
            records = getattr(dataset, "records", None)
            for i in bad:
                report_bad(dataset, BadImageFile(item_path(records, i, name), index["reasons"][i]))
            raise UserError(
                f"None of the {count} images of {name} can be decoded: check its files (see the bad-file log)"
            )
        write_json(temporary / INDEX_FILE, index)
        write_json(
            temporary / SETTINGS_FILE,
            {
                "version": CACHE_FORMAT_VERSION,
                "description": name,
                "num_items": count,
                "image_size": settings.image_size,
                "fit": settings.fit,
                "dtype": settings.dtype,
                "channels": settings.channels,
            },
        )
        sync_folder(temporary)
        os.rename(temporary, folder)
        write_marker(folder)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    size_mb = sum(path.stat().st_size for path in folder.iterdir()) / BYTES_PER_MB
    logger.info(
        "Decoded %d images of %s into the cache (%d bad) in %.1f s, %.1f MB on disk: %s",
        count,
        name,
        len(bad),
        time.perf_counter() - start,
        size_mb,
        folder,
    )


def decode_into(dataset: Dataset, settings: CacheSettings, images: np.ndarray, name: str) -> dict[str, list[Any]]:
    """Decode the items in parallel (``settings.num_workers`` processes), write each slot as it arrives and
    return the index: per item path, label, original height and width, ok flag and reason."""
    count = len(images)
    records = getattr(dataset, "records", None)
    source_labels = getattr(dataset, "labels", None)
    index: dict[str, list[Any]] = {
        "paths": [str(record.path) for record in records] if records is not None else [None] * count,
        "labels": [NO_LABEL] * count,
        "heights": [0] * count,
        "widths": [0] * count,
        "ok": [False] * count,
        "reasons": [""] * count,
    }
    loader = DataLoader(
        DecodingDataset(dataset, settings, name),
        batch_size=None,
        num_workers=settings.num_workers,
        collate_fn=keep_item,
    )
    description = f"Decoding {name} into the cache"
    with tqdm(loader, total=count, desc=description, unit="img", mininterval=1.0) as progress:
        for written, item in enumerate(progress, start=1):
            if item.ok:
                assert item.pixels is not None
                images[item.index] = item.pixels.numpy()
            label = source_labels[item.index] if source_labels is not None else item.label
            index["labels"][item.index] = raw_label(label) if label is not None else NO_LABEL
            index["heights"][item.index] = item.height
            index["widths"][item.index] = item.width
            index["ok"][item.index] = item.ok
            index["reasons"][item.index] = item.reason
            if written % FLUSH_EVERY == 0:
                images.flush()  # type: ignore[attr-defined]
    return index


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def reserve_space(root: Path, num_bytes: int, name: str) -> None:
    """UserError when the disk of ``root`` lacks room for the images (a full disk would crash the build)."""
    free = shutil.disk_usage(root).free
    if free < num_bytes:
        raise UserError(
            f"The decode cache of {name} needs {num_bytes / BYTES_PER_MB:.0f} MB but {root} has "
            f"{free / BYTES_PER_MB:.0f} MB free: free disk space, choose another cache folder or a smaller image size"
        )


def allocate(path: Path, name: str) -> None:
    """Reserve the file's blocks, so a disk that fills up during the build raises here instead of
    killing the process with SIGBUS when a memory-mapped page cannot be written."""
    with open(path, "r+b") as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise UserError(
                    f"No disk space for the decode cache of {name} in {path.parent}: free disk space or choose "
                    "another cache folder"
                ) from None
            # Filesystems without fallocate (EOPNOTSUPP, EINVAL): write the memory map without the reservation.


def write_json(path: Path, content: Any) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle)
        handle.flush()
        os.fsync(handle.fileno())


def sync_folder(folder: Path) -> None:
    """fsync the folder's files and the folder itself, so the rename commits data that is on disk."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_marker(folder: Path) -> None:
    write_json(folder / COMPLETE_MARKER, {"completed": time.time()})
    sync_folder(folder)


# --- reading -------------------------------------------------------------------------------------------------


def label_from_json(label: Any) -> int | tuple[float, ...]:
    return tuple(float(value) for value in label) if isinstance(label, list) else int(label)


class CachedImageDataset(Dataset):
    """A complete cache folder as a dataset of ``(integer image (C, S, S), label)`` items.

    The memory map is opened lazily, read-only, in each process on first access and never pickled, so
    DataLoader workers (fork or spawn) and DDP ranks each map the file themselves and share its pages.
    """

    def __init__(self, folder: Path, records: Sequence[ImageRecord] | None = None) -> None:
        self._folder = Path(folder)
        settings = json.loads((self._folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        index = json.loads((self._folder / INDEX_FILE).read_text(encoding="utf-8"))
        self._image_size = int(settings["image_size"])
        self._channels = int(settings["channels"])
        self._dtype = str(settings["dtype"])
        self.description = str(settings.get("description", ""))
        self.paths: list[str | None] = index["paths"]
        self._labels = [label_from_json(label) for label in index["labels"]]
        self.original_sizes = list(zip(index["heights"], index["widths"]))
        self.ok = np.asarray(index["ok"], dtype=bool)
        self.reasons: list[str] = index["reasons"]
        self._records = list(records) if records is not None else None
        if self._records is not None and len(self._records) != len(self.ok):
            raise ValueError(f"{len(self._records)} records for the {len(self.ok)} items of the cache {self._folder}")
        self.next_decodable = next_decodable(self.ok)
        self._images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def folder(self) -> Path:
        return self._folder

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def labels(self) -> list[int | tuple[float, ...]]:
        return list(self._labels)

    @property
    def records(self) -> list[ImageRecord] | None:
        return self._records

    @property
    def num_bad(self) -> int:
        return int((~self.ok).sum())

    def bad_files(self) -> list[BadImageFile]:
        """The items that could not be decoded, with their reasons."""
        return [
            BadImageFile(self.paths[i] or f"{self.description} item {i}", self.reasons[i])
            for i in np.flatnonzero(~self.ok).tolist()
        ]

    def images(self) -> np.ndarray:
        """The read-only memory map (N, C, S, S), opened on first use in this process."""
        if self._images is None:
            self._images = np.load(self._folder / IMAGES_FILE, mmap_mode="r")
        return self._images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any] | None:
        if not self.ok[index]:
            return None
        pixels = torch.from_numpy(np.array(self.images()[index]))
        return pixels, label_to_python(self._labels[index])

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, Any]]:
        """A batch in one read of the memory map; undecodable items are replaced by the next decodable one."""
        resolved = self.next_decodable[np.asarray(indices, dtype=np.int64)]
        batch = torch.from_numpy(self.images()[resolved])  # fancy indexing copies: one read for the batch
        return [(batch[k], label_to_python(self._labels[i])) for k, i in enumerate(resolved.tolist())]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_images"] = None  # each process maps the file itself
        return state

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._folder}, {len(self)} items, {self.num_bad} bad, "
            f"{self._channels}x{self._image_size}x{self._image_size} {self._dtype})"
        )


def next_decodable(ok: np.ndarray) -> np.ndarray:
    """For every item, the first decodable item at or after it, wrapping around at the end."""
    decodable = np.flatnonzero(ok)
    if len(decodable) == 0:
        return np.zeros(len(ok), dtype=np.int64)  # no cache is built without a decodable item
    position = np.searchsorted(decodable, np.arange(len(ok)))
    return decodable[position % len(decodable)]


class FixedSizeDataset(Dataset):
    """The cache's items without a cache: decodes on access and returns the same ``(integer image, label)``.

    Undecodable items are None, as in the source dataset (which logs them).
    """

    def __init__(self, dataset: Dataset, image_size: int, fit: str, dtype: str, channels: int) -> None:
        check_fit_and_dtype(fit, dtype)
        self.dataset = dataset
        self.image_size = image_size
        self.fit = fit
        self.dtype = dtype
        self.channels = channels

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    @property
    def labels(self) -> list[Any]:
        return self.dataset.labels  # type: ignore[attr-defined]

    @property
    def records(self) -> list[ImageRecord] | None:
        return getattr(self.dataset, "records", None)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any] | None:
        item = self.dataset[index]
        if item is None:
            return None
        image, label = item
        return prepare_image(image, self.image_size, self.fit, self.dtype, self.channels), label
