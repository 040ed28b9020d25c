"""What every dataset returns: image tensors and labels, split into train / val / test.

Datasets know nothing about SSL views or augmentation. An item is ``(image, label)`` where ``image`` is
a float32 tensor ``(C, H, W)`` in [0, 1] with the file's own channel count (1 for radiographs, 3 for
RGB photos) and ``label`` is an int class index (binary and multiclass; -1 for unlabeled) or a float
vector (multilabel; NaN marks an observation to ignore).

An image that cannot be decoded yields ``None``; the data loader's collate function drops it, and the
file is appended to the dataset's bad-file log (one line per file: path, reason) so a run reports it
instead of dying on epoch 7.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from innerssl.errors import BadImageFile

logger = logging.getLogger(__name__)

Task = Literal["binary", "multiclass", "multilabel", "unlabeled"]
Split = Literal["train", "val", "test"]


@dataclass(frozen=True)
class LabelInfo:
    """What the labels of a dataset mean."""

    task: Task
    class_names: tuple[str, ...] = ()

    @property
    def num_outputs(self) -> int:
        """Number of logits a classifier needs: 1 for binary, one per class or per finding otherwise."""
        if self.task == "binary":
            return 1
        return len(self.class_names)


UNLABELED = LabelInfo("unlabeled")


@dataclass(frozen=True)
class DatasetOptions:
    """Dataset-independent choices a container passes to a dataset builder."""

    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    label_names: tuple[str, ...] = ()
    """Findings / label columns to predict; empty means the dataset's default."""
    uncertainty_policy: Literal["ones", "zeros", "ignore"] = "zeros"
    frontal_only: bool = False
    image_column: str = "path"
    apply_voi_lut: bool = True
    cache_dir: Path | None = None
    """Where generated or derived files may be written (e.g. the embedded demo dataset)."""
    root_parameter: str = "--local_dataset"
    """The flag that supplied the dataset's folder, for error messages."""
    bad_file_log: Path | None = None
    """Text file that collects undecodable images (path and reason), one line each."""
    csv_file: str = "dataset.csv"
    """Generic CSV dataset: the label file, relative to the dataset folder."""
    folder_patient_pattern: str = r"(person\d+)_|(.+\d)-\d+$"
    """ImageFolder: regular expression matched (``re.match``) against each file name without its suffix; the
    first group that matched (the whole match if it has no groups) is the file's patient id, so splits carved
    from a folder keep a patient's images together. A file it does not match, or an empty pattern, is its own
    patient. The default reads Kermany et al.'s chest X-ray names: ``person1234_bacteria_5678`` -> ``person1234``,
    ``IM-0115-0001`` -> ``IM-0115``, ``NORMAL2-IM-0372-0001`` -> ``NORMAL2-IM-0372`` (the last ``-<number>`` is
    the image number)."""
    download: bool = False
    """Allow datasets torchvision can fetch (CIFAR) to be downloaded when missing."""
    demo: dict[str, Any] = field(default_factory=dict)
    """Embedded demo dataset: overrides of ``DemoSpec`` fields (num_images, image_size)."""


@dataclass
class DatasetSplits:
    """The train / val / test datasets of one source, and what their labels mean."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    label_info: LabelInfo

    def get(self, split: Split) -> Dataset:
        dataset = getattr(self, split)
        if dataset is None:
            raise ValueError(f"This dataset has no {split} split")
        return dataset


@dataclass(frozen=True)
class UsedDataset:
    """A dataset as a run uses it: its registered name, what for (``ssl``, ``linear_head``, ``classifier``), and
    its splits as the dataset built them (before storage), for splits.csv and --check_data."""

    name: str
    role: str
    splits: DatasetSplits


DatasetBuilder = Callable[[Path | None, DatasetOptions], DatasetSplits]
"""A registered dataset: builds the splits from the dataset folder (None where it needs none)."""


@dataclass(frozen=True)
class ImageRecord:
    """One image file of a dataset."""

    path: Path
    label: int | tuple[float, ...] = -1
    patient_id: str = ""


ImageReader = Callable[[Path], np.ndarray]


class BadFileLog:
    """Appends undecodable files to a text file, once per file per process; safe across workers."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._seen: set[Path] = set()

    def record(self, error: BadImageFile) -> None:
        if error.path in self._seen:
            return
        self._seen.add(error.path)
        logger.warning("Skipping %s", error)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            line = f"{error.path}\t{error.reason}\n"
            # One short append per line is atomic on POSIX, so workers and ranks can share the file.
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())


def read_bad_file_log(path: Path) -> dict[str, str]:
    """The distinct bad files in a log written by :class:`BadFileLog`, with their reasons."""
    if not path.is_file():
        return {}
    entries: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        file, _, reason = line.partition("\t")
        entries.setdefault(file, reason)
    return entries


class ImageFileDataset(Dataset):
    """Image files decoded on access by ``reader`` (which returns an (H, W) or (H, W, C) array in [0, 1])."""

    def __init__(
        self,
        records: Sequence[ImageRecord],
        label_info: LabelInfo,
        reader: ImageReader,
        bad_file_log: BadFileLog | None = None,
    ) -> None:
        self.records = list(records)
        self.label_info = label_info
        self.reader = reader
        self.bad_file_log = bad_file_log or BadFileLog()

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int | tuple[float, ...]]:
        return [record.label for record in self.records]

    def decode(self, index: int) -> tuple[torch.Tensor, Any]:
        """Item ``index`` as (float image (C, H, W), label); raises :class:`BadImageFile` with the reason.

        The decode cache calls this (instead of ``__getitem__``) to learn why a file is bad.
        """
        record = self.records[index]
        return image_to_tensor(self.reader(record.path)), label_to_python(record.label)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any] | None:
        try:
            return self.decode(index)
        except BadImageFile as error:
            self.bad_file_log.record(error)
            return None

    def cache_fingerprint(self) -> dict[str, Any]:
        """What the decoded images depend on, for the decode cache's key: the reader and every file.

        Per record: path, file size, modification time (ns) and label, so touching, replacing or
        relabelling a file, or changing the file list, gives a new key. A missing file gets placeholder
        stats; the cache build then reports it as bad.
        """
        return {
            "type": type(self).__qualname__,
            "reader": reader_identity(self.reader),
            "records": [[str(record.path), *file_stats(record.path), record.label] for record in self.records],
        }


class LabeledSubset(Subset):
    """A ``Subset`` that keeps the dataset's ``labels`` (and ``records`` where it has them) for the subset."""

    @property
    def labels(self) -> list[Any]:
        labels = self.dataset.labels  # type: ignore[attr-defined]
        return [labels[i] for i in self.indices]

    @property
    def records(self) -> list[ImageRecord] | None:
        records = getattr(self.dataset, "records", None)
        return None if records is None else [records[i] for i in self.indices]


MISSING_FILE_STATS = (-1, -1)
"""(size, mtime_ns) that stand for a file that does not exist, in cache fingerprints."""


def file_stats(path: Path | str) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file, or MISSING_FILE_STATS when it cannot be read."""
    try:
        stats = os.stat(path)
    except OSError:
        return MISSING_FILE_STATS
    return stats.st_size, stats.st_mtime_ns


def reader_identity(reader: Callable[..., Any]) -> dict[str, Any]:
    """A reader's module, qualified name and bound arguments (of a ``functools.partial``), for cache keys.

    Two readers with the same identity decode a file to the same pixels, e.g. ``read_image`` with the
    same ``apply_voi_lut``; a different setting gives a different identity.
    """
    arguments: list[Any] = []
    keywords: dict[str, Any] = {}
    while isinstance(reader, functools.partial):
        arguments = [*reader.args, *arguments]
        keywords = {**reader.keywords, **keywords}
        reader = reader.func
    kind = reader if hasattr(reader, "__qualname__") else type(reader)
    return {
        "module": getattr(kind, "__module__", ""),
        "qualname": getattr(kind, "__qualname__", repr(kind)),
        "args": [repr(argument) for argument in arguments],
        "keywords": {name: repr(value) for name, value in sorted(keywords.items())},
    }


def image_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) float array in [0, 1] -> float32 tensor (C, H, W)."""
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim == 2:
        array = array[None]
    elif array.ndim == 3:
        array = np.moveaxis(array, -1, 0)
    else:
        raise ValueError(f"Expected a 2D image, got an array of shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array))


def label_to_python(label: int | tuple[float, ...]) -> int | torch.Tensor:
    if isinstance(label, tuple):
        return torch.tensor(label, dtype=torch.float32)
    return int(label)


def count_labels(labels: Sequence[int | tuple[float, ...]], label_info: LabelInfo) -> dict[str, int]:
    """Images per label, for the one-line report each dataset prints."""
    if label_info.task == "unlabeled":
        return {"unlabeled": len(labels)}
    if label_info.task == "multilabel":
        matrix = np.array([list(label) for label in labels], dtype=np.float32).reshape(len(labels), -1)
        return {name: int(np.nansum(matrix[:, i] == 1)) for i, name in enumerate(label_info.class_names)}
    names = label_info.class_names or ("negative", "positive")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(names))
    return {name: int(counts[i]) for i, name in enumerate(names)}


def report_splits(name: str, splits: DatasetSplits) -> str:
    """One line per split: how many images and how many per label."""
    lines = []
    for split in ("train", "val", "test"):
        dataset = getattr(splits, split)
        if dataset is None:
            continue
        labels = getattr(dataset, "labels", None)
        counts = count_labels(labels, splits.label_info) if labels is not None else {}
        per_label = ", ".join(f"{k}={v}" for k, v in counts.items())
        lines.append(f"{name} {split}: {len(dataset)} images ({per_label})")
    return "\n".join(lines)
