"""Any image collection described by one CSV file: a column of image paths and label columns.

``root/dataset.csv`` (or the file named by ``options.csv_file``, relative to the root) holds:

- the image path column (``--csv_image_column``, default ``path``), relative to the root;
- the label columns (``--label_names``): none gives unlabeled images (for SSL); one column is a binary
  task when its values are 0/1 and a multiclass task over its sorted distinct values otherwise (rows
  without a value are left out); several 0/1 columns are a multilabel task (blank = ignore, NaN);
- optionally ``patient_id``, so that no patient's images land in two splits (without it each image is
  its own patient and single-label splits are stratified by class);
- optionally ``split`` (train / val / test), which replaces the seeded split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from innerssl.data.datasets.base import UNLABELED, DatasetOptions, DatasetSplits, ImageRecord, LabelInfo
from innerssl.data.datasets.common import (
    binary_label_info,
    existing_indices,
    format_names,
    make_splits,
    read_csv,
    require_root,
    root_parameter,
    seeded_split,
    select,
)
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "CSV dataset"
PATIENT_COLUMN = "patient_id"
SPLIT_COLUMN = "split"
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
"""Accepted values of the split column (case-insensitive) and the split each means."""
BINARY_VALUES = frozenset({0.0, 1.0})

Label = int | tuple[float, ...]


def csv_path(root: Path, options: DatasetOptions) -> Path:
    path = root / options.csv_file
    if not path.is_file():
        raise UserError(
            f"{TITLE} folder {root} has no {path.name}: write a CSV with a '{options.image_column}' column of image "
            f"paths relative to the folder (plus label columns) and pass the folder with {root_parameter(options)}"
        )
    return path


def class_name(value: object) -> str:
    """A class value as a name: 2.0 (from a column with blanks) reads as "2"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def single_column_labels(frame: pd.DataFrame, column: str, path: Path) -> tuple[pd.DataFrame, list[Label], LabelInfo]:
    """Rows with a value, their int labels and the binary / multiclass label info."""
    present = frame[column].notna() & (frame[column].astype(str).str.strip() != "")
    if not present.all():
        logger.warning("%s: %d row(s) of %s have no '%s' value and are left out", TITLE, (~present).sum(), path, column)
    frame = frame[present]
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if set(numeric.unique().tolist()) <= BINARY_VALUES:
            return frame, [int(value) for value in numeric], binary_label_info(column)
        values = numeric
    classes = sorted(values.unique().tolist())
    index = {value: position for position, value in enumerate(classes)}
    labels: list[Label] = [index[value] for value in values]
    return frame, labels, LabelInfo("multiclass", tuple(class_name(value) for value in classes))


def multilabel_labels(frame: pd.DataFrame, columns: tuple[str, ...], path: Path) -> list[Label]:
    """A 0/1 float per column; blanks are NaN (ignored by multilabel losses)."""
    matrix = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    invalid = [
        column
        for column in columns
        if (frame[column].notna() & matrix[column].isna()).any() or not set(matrix[column].dropna()) <= BINARY_VALUES
    ]
    if invalid:
        raise UserError(
            f"CSV file {path}: multilabel column(s) {', '.join(invalid)} hold values other than 0, 1 and blank: "
            "give one 0/1 column per label"
        )
    return [tuple(float(value) for value in row) for row in matrix.to_numpy(dtype=np.float64)]


def split_column(frame: pd.DataFrame, path: Path) -> list[str]:
    """The split of each row from the split column; a UserError names values it does not know."""
    values = frame[SPLIT_COLUMN].fillna("").astype(str).str.strip().str.lower()
    unknown = sorted(set(values) - set(SPLIT_NAMES))
    if unknown:
        raise UserError(
            f"CSV file {path}: column '{SPLIT_COLUMN}' has value(s) {format_names(repr(v) for v in unknown)}; "
            "use train, val or test in every row"
        )
    return [SPLIT_NAMES[value] for value in values]


@DATASETS.register("CSV")
def build_csv(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """Images and labels as one CSV lists them; see the module docstring for the columns."""
    root = require_root(root, TITLE, "write a dataset.csv beside the images", options)
    path = csv_path(root, options)
    label_columns = tuple(options.label_names)
    frame = read_csv(path, (options.image_column, *label_columns), dtype={PATIENT_COLUMN: str})
    if len(label_columns) == 0:
        labels: list[Label] = [-1] * len(frame)
        label_info = UNLABELED
    elif len(label_columns) == 1:
        frame, labels, label_info = single_column_labels(frame, label_columns[0], path)
    else:
        labels, label_info = multilabel_labels(frame, label_columns, path), LabelInfo("multilabel", label_columns)
    has_patients = PATIENT_COLUMN in frame.columns
    patients = frame[PATIENT_COLUMN].fillna("").astype(str) if has_patients else [""] * len(frame)
    splits = split_column(frame, path) if SPLIT_COLUMN in frame.columns else None
    rows = [
        (ImageRecord(path=root / str(image), label=label, patient_id=patient), split)
        for image, label, patient, split in zip(
            frame[options.image_column], labels, patients, splits or [""] * len(frame)
        )
    ]
    rows = select(rows, existing_indices([record.path for record, _ in rows], TITLE, root))
    records = [record for record, _ in rows]
    if splits is not None:
        parts = {name: [record for record, split in rows if split == name] for name in ("train", "val", "test")}
        warn_shared_patients(parts, path)
        train, val, test = parts["train"], parts["val"], parts["test"] or None
    else:
        stratify = not has_patients and label_info.task in ("binary", "multiclass")
        indices = seeded_split(records, options.val_fraction, options.test_fraction, options.seed, stratify=stratify)
        train, val, test = (select(records, part) for part in indices)
    return make_splits("CSV", train, val, test, label_info, options, logger)


def warn_shared_patients(parts: dict[str, list[ImageRecord]], path: Path) -> None:
    """The split column is the user's; a patient in two splits is worth a warning, not a refusal."""
    owners: dict[str, set[str]] = {}
    for name, records in parts.items():
        for record in records:
            if record.patient_id:
                owners.setdefault(record.patient_id, set()).add(name)
    shared = [patient for patient, names in owners.items() if len(names) > 1]
    if shared:
        logger.warning(
            "%s: %d patient(s) have images in more than one split of column '%s' in %s (%s)",
            TITLE,
            len(shared),
            SPLIT_COLUMN,
            path,
            format_names(shared),
        )
