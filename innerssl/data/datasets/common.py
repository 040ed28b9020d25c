"""Helpers the file-based dataset modules share: checking the user's folder and CSVs, finding image
files, seeded splits and assembling :class:`DatasetSplits`.

Everything a user can get wrong (no folder, a missing file, wrong CSV columns, no images) ends in a
one-line :class:`UserError` that names the thing and the flag that fixes it, so each dataset module
only states what its download looks like.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from innerssl.data.datasets.base import (
    BadFileLog,
    DatasetOptions,
    DatasetSplits,
    ImageFileDataset,
    ImageReader,
    ImageRecord,
    LabelInfo,
    report_splits,
)
from innerssl.data.image_io import SUPPORTED_SUFFIXES, read_image
from innerssl.data.splits import split_by_group
from innerssl.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")

IMAGE_SUFFIXES = tuple(SUPPORTED_SUFFIXES)
"""File types :func:`read_image` decodes by suffix (PNG, JPEG, BMP, TIFF, DICOM)."""
MAX_NAMES_IN_MESSAGE = 5
"""How many missing files / unknown values an error or warning spells out before it says 'and N more'."""


# --- the user's folder and files ---------------------------------------------------------------------


def root_parameter(options: DatasetOptions) -> str:
    """The container flag that supplied this dataset's folder, for error messages."""
    return options.root_parameter


def require_root(root: Path | None, title: str, how_to_get: str, options: DatasetOptions) -> Path:
    """``root`` as a Path, or a UserError saying how to obtain the dataset and which flag to pass."""
    parameter = root_parameter(options)
    if root is None:
        raise UserError(f"{title} needs its folder: {how_to_get} and pass its folder with {parameter}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{title} folder {root} does not exist: {how_to_get} and pass its folder with {parameter}")
    return root


def require_file(folder: Path, names: Sequence[str], title: str, how_to_get: str, options: DatasetOptions) -> Path:
    """The first of ``names`` that exists in ``folder``; otherwise a UserError naming the first one."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"{title} folder {folder} has no {names[0]}: {how_to_get} and pass its folder with {root_parameter(options)}"
    )


def format_names(names: Iterable[object]) -> str:
    """'a, b, c' with at most MAX_NAMES_IN_MESSAGE names, then 'and N more'."""
    names = [str(name) for name in names]
    shown = ", ".join(names[:MAX_NAMES_IN_MESSAGE])
    rest = len(names) - MAX_NAMES_IN_MESSAGE
    return f"{shown} and {rest} more" if rest > 0 else shown


def read_csv(path: Path, required_columns: Iterable[str], **kwargs: object) -> pd.DataFrame:
    """A CSV file as a DataFrame; a UserError names the file and any missing columns."""
    try:
        frame = pd.read_csv(path, **kwargs)  # type: ignore[arg-type]
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise UserError(
            f"Cannot read CSV file {path} ({error}): check that it is a comma-separated text file"
        ) from None
    require_columns(frame, path, required_columns)
    return frame


def require_columns(frame: pd.DataFrame, path: Path, required_columns: Iterable[str]) -> None:
    missing = [column for column in required_columns if column not in frame.columns]
    if missing:
        raise UserError(
            f"CSV file {path} lacks the column(s) {', '.join(missing)}; "
            f"its columns are: {', '.join(map(str, frame.columns))}"
        )


def scan_files(folders: Iterable[Path], suffixes: Sequence[str] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """File name -> path for the image files directly inside each existing folder (first folder wins).

    ``os.scandir`` avoids one stat per file, which matters for folders of 100,000 images.
    """
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.lower().endswith(tuple(suffixes)) and entry.is_file() and entry.name not in found:
                    found[entry.name] = Path(entry.path)
    return found


def existing_indices(paths: Sequence[Path], title: str, root: Path) -> list[int]:
    """Indices of the paths that are files; warns with the count of missing ones, a UserError if none exist."""
    existing = [index for index, path in enumerate(paths) if path.is_file()]
    if paths and not existing:
        raise UserError(
            f"{title} folder {root} holds none of the {len(paths)} image files its label file lists "
            f"(e.g. {paths[0]}): check the folder and that the images were extracted"
        )
    kept = set(existing)
    missing = [path for index, path in enumerate(paths) if index not in kept]
    report_missing(len(missing), missing, title, root)
    return existing


def keep_existing(records: Sequence[ImageRecord], title: str, root: Path) -> list[ImageRecord]:
    """The records whose file exists (see :func:`existing_indices`)."""
    return select(records, existing_indices([record.path for record in records], title, root))


def report_missing(
    count: int, examples: Sequence[object], title: str, root: Path, listed_in: str = "the labels"
) -> None:
    """One warning for files a label or split file lists but the folder lacks: a partial download still runs."""
    if count:
        logger.warning(
            "%s: %d image file(s) listed in %s are missing under %s and are left out (%s)",
            title,
            count,
            listed_in,
            root,
            format_names(examples),
        )


# --- readers, splits, assembly ---------------------------------------------------------------------------


def image_reader(options: DatasetOptions) -> ImageReader:
    """The shared decoder with this run's DICOM settings; a partial so data-loader workers can pickle it."""
    return functools.partial(read_image, apply_voi_lut=options.apply_voi_lut)


def bad_file_log(options: DatasetOptions) -> BadFileLog:
    return BadFileLog(options.bad_file_log)


def seeded_split(
    records: Sequence[ImageRecord], val_fraction: float, test_fraction: float, seed: int, stratify: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train / val / test indices, patient-disjoint (records without a patient id are their own patient).

    With ``stratify`` (int labels) each class is split on its own, so small datasets keep every class
    in every split.
    """
    groups = [record.patient_id or str(record.path) for record in records]
    if not stratify:
        return split_by_group(groups, val_fraction, test_fraction, seed)
    labels = np.array([record.label for record in records], dtype=np.int64)
    parts: list[list[np.ndarray]] = [[], [], []]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        split = split_by_group([groups[i] for i in members], val_fraction, test_fraction, seed)
        for part, indices in zip(parts, split):
            part.append(members[indices])
    return tuple(np.sort(np.concatenate(part)) if part else np.array([], dtype=np.int64) for part in parts)  # type: ignore[return-value]


def train_val_split(records: Sequence[ImageRecord], options: DatasetOptions) -> tuple[np.ndarray, np.ndarray]:
    """Patient-disjoint train / val indices, for datasets whose test set is fixed by their publisher."""
    train, val, _ = seeded_split(records, options.val_fraction, 0.0, options.seed)
    return train, val


def select(items: Sequence[T], indices: Iterable[int]) -> list[T]:
    return [items[int(i)] for i in indices]


def make_splits(
    name: str,
    train: Sequence[ImageRecord],
    val: Sequence[ImageRecord],
    test: Sequence[ImageRecord] | None,
    label_info: LabelInfo,
    options: DatasetOptions,
    log_to: logging.Logger,
) -> DatasetSplits:
    """ImageFileDatasets sharing one reader and one bad-file log; logs the per-split report once."""
    reader = image_reader(options)
    log = bad_file_log(options)

    def dataset(records: Sequence[ImageRecord]) -> ImageFileDataset:
        return ImageFileDataset(records, label_info, reader, log)

    splits = DatasetSplits(
        train=dataset(train),
        val=dataset(val),
        test=dataset(test) if test is not None else None,
        label_info=label_info,
    )
    log_to.info(report_splits(name, splits))
    return splits


def binary_label_info(finding: str) -> LabelInfo:
    """Binary labels of one finding: class 0 is its absence, class 1 the finding."""
    return LabelInfo("binary", (f"No {finding}", finding))


def check_label_names(requested: Sequence[str], known: Sequence[str], title: str, flag: str = "--label_names") -> None:
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise UserError(f"{title} has no finding(s) {', '.join(unknown)}: choose {flag} from {', '.join(known)}")
