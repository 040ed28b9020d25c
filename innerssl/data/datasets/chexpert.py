"""CheXpert (Stanford): chest radiographs (JPEG) with 14 observations labeled positive, negative,
uncertain (-1) or not mentioned (blank).

The folder is the download as is: ``train.csv`` and ``valid.csv`` whose ``Path`` column reads like
``CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg``, relative to the folder that
*contains* ``CheXpert-v1.0-small/``. Users point at either folder, so the CSVs are looked for in the
given folder and in its ``CheXpert*`` subfolder, and the leading folder name of each path is replaced
by the folder that holds the CSVs.

Uncertain labels follow ``uncertainty_policy``: "ones" (U-Ones), "zeros" (U-Zeros) or "ignore" (NaN,
which multilabel losses skip; binary datasets drop those images). Blank is negative. Validation is a
seeded patient-level split of ``train.csv``; the official ``valid.csv`` (radiologist-labeled) is the
test set.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageRecord, LabelInfo
from innerssl.data.datasets.common import (
    binary_label_info,
    check_label_names,
    keep_existing,
    make_splits,
    read_csv,
    require_columns,
    require_root,
    root_parameter,
    select,
    train_val_split,
)
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "CheXpert"
HOW_TO_GET = "download CheXpert-v1.0-small from https://stanfordmlgroup.github.io/competitions/chexpert/"
TRAIN_CSV = "train.csv"
VALID_CSV = "valid.csv"
DATASET_FOLDER_PREFIX = "CheXpert"
"""The download's own folder (``CheXpert-v1.0-small``, ``CheXpert-v1.0``) starts with this."""
SPLIT_FOLDERS = ("train", "valid")
"""First component of a path that is already relative to the folder holding the CSVs."""
PATH_COLUMN = "Path"
VIEW_COLUMN = "Frontal/Lateral"
FRONTAL = "Frontal"
PATIENT_PATTERN = re.compile(r"patient\d+")
UNCERTAIN = -1.0
UNCERTAINTY_VALUES = {"ones": 1.0, "zeros": 0.0, "ignore": float("nan")}
OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
DEFAULT_BINARY_OBSERVATION = "Pneumonia"


def dataset_folder(root: Path, options: DatasetOptions) -> Path:
    """The folder holding train.csv: ``root`` itself or its ``CheXpert*`` subfolder."""
    if (root / TRAIN_CSV).is_file():
        return root
    candidates = sorted(child for child in root.glob(f"{DATASET_FOLDER_PREFIX}*") if (child / TRAIN_CSV).is_file())
    if candidates:
        return candidates[0]
    raise UserError(
        f"{TITLE} folder {root} has no {TRAIN_CSV} (nor CheXpert-v1.0-small/{TRAIN_CSV}): {HOW_TO_GET} and pass "
        f"its folder with {root_parameter(options)}"
    )


def image_path(folder: Path, relative: str) -> Path:
    """The file a ``Path`` entry names: its leading dataset-folder component is replaced by ``folder``."""
    parts = PurePosixPath(relative.replace("\\", "/")).parts
    if len(parts) > 1 and parts[0] not in SPLIT_FOLDERS:
        parts = parts[1:]
    return folder.joinpath(*parts)


def patient_id(relative: str) -> str:
    match = PATIENT_PATTERN.search(relative)
    return match.group(0) if match else relative


def label_matrix(frame: pd.DataFrame, names: tuple[str, ...], policy: str) -> np.ndarray:
    """(images, observations) floats: 1, 0, or the policy's value for uncertain; blank is 0."""
    values = frame[list(names)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    uncertain = values == UNCERTAIN
    values = np.nan_to_num(values, nan=0.0)
    values[uncertain] = UNCERTAINTY_VALUES[policy]
    return values


def read_split(
    folder: Path, csv_name: str, names: tuple[str, ...], options: DatasetOptions
) -> tuple[list[str], list[Path], np.ndarray]:
    """Path entries, image files and label matrix of one CSV, frontal views only if asked."""
    csv_path = folder / csv_name
    if not csv_path.is_file():
        raise UserError(
            f"{TITLE} folder {folder} has no {csv_name}: {HOW_TO_GET} and pass its folder with "
            f"{root_parameter(options)}"
        )
    frame = read_csv(csv_path, (PATH_COLUMN,))
    require_columns(frame, csv_path, names)
    if options.frontal_only:
        require_columns(frame, csv_path, (VIEW_COLUMN,))
        frame = frame[frame[VIEW_COLUMN] == FRONTAL]
    entries = [str(entry) for entry in frame[PATH_COLUMN]]
    return (
        entries,
        [image_path(folder, entry) for entry in entries],
        label_matrix(frame, names, options.uncertainty_policy),
    )


def build(name: str, root: Path | None, options: DatasetOptions, names: tuple[str, ...], binary: bool) -> DatasetSplits:
    """Records of train.csv (split into train / val by patient) and valid.csv (test)."""
    check_label_names(names, OBSERVATIONS, TITLE)
    root = require_root(root, TITLE, HOW_TO_GET, options)
    folder = dataset_folder(root, options)
    record_sets = []
    for csv_name in (TRAIN_CSV, VALID_CSV):
        entries, paths, labels = read_split(folder, csv_name, names, options)
        records = []
        for entry, path, row in zip(entries, paths, labels):
            if binary:
                if np.isnan(row[0]):
                    continue  # "ignore" policy: an uncertain image has no binary label
                label: int | tuple[float, ...] = int(row[0])
            else:
                label = tuple(float(value) for value in row)
            records.append(ImageRecord(path=path, label=label, patient_id=patient_id(entry)))
        record_sets.append(keep_existing(records, TITLE, folder))
    train_val, test = record_sets
    train, val = train_val_split(train_val, options)
    label_info = binary_label_info(names[0]) if binary else LabelInfo("multilabel", names)
    return make_splits(name, select(train_val, train), select(train_val, val), test, label_info, options, logger)


@DATASETS.register("CheXpert", folder_family="CheXpert")
def build_chexpert(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """A float per observation (all 14, or ``label_names`` in that order); NaN marks ignored uncertainty."""
    return build("CheXpert", root, options, tuple(options.label_names) or OBSERVATIONS, binary=False)


@DATASETS.register("CheXpertBinary", folder_family="CheXpert")
def build_chexpert_binary(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """0/1 for the first of ``label_names`` (default Pneumonia); uncertain images dropped under "ignore"."""
    observation = options.label_names[0] if options.label_names else DEFAULT_BINARY_OBSERVATION
    return build("CheXpertBinary", root, options, (observation,), binary=True)
