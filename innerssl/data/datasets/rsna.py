"""RSNA Pneumonia Detection Challenge (Kaggle): 26,684 chest radiographs as JPEG-baseline DICOMs.

The folder is the Kaggle download as is: ``stage_2_train_images/<patientId>.dcm`` and
``stage_2_train_labels.csv`` with one row per bounding box (``patientId, x, y, width, height,
Target``); a patient without pneumonia has one row with an empty box and Target 0. One image per
patient, so an image's label is the maximum Target of its rows. The stage 1 names
(``stage_1_train_images``, ``stage_1_train_labels.csv``) are accepted too.

Kaggle's test images carry no labels, so train / val / test are seeded patient-level splits of the
labeled images.
"""

from __future__ import annotations

import logging
from pathlib import Path

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageRecord, LabelInfo
from innerssl.data.datasets.common import (
    make_splits,
    read_csv,
    report_missing,
    require_root,
    root_parameter,
    scan_files,
    seeded_split,
    select,
)
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "RSNA Pneumonia Detection Challenge"
HOW_TO_GET = "download the dataset from https://www.kaggle.com/competitions/rsna-pneumonia-detection-challenge/data"
STAGES = (
    ("stage_2_train_labels.csv", "stage_2_train_images"),
    ("stage_1_train_labels.csv", "stage_1_train_images"),
)
"""(label file, image folder) pairs, newest first."""
PATIENT_COLUMN = "patientId"
TARGET_COLUMN = "Target"
DICOM_SUFFIX = ".dcm"
LABEL_INFO = LabelInfo("binary", ("No pneumonia", "Pneumonia"))


def find_stage(root: Path, options: DatasetOptions) -> tuple[Path, Path]:
    """The label file and image folder of the newest stage present under ``root``."""
    for label_name, image_name in STAGES:
        if (root / label_name).is_file():
            if not (root / image_name).is_dir():
                raise UserError(
                    f"{TITLE} folder {root} has {label_name} but no {image_name}/ folder: extract the images "
                    f"there and pass the folder with {root_parameter(options)}"
                )
            return root / label_name, root / image_name
    raise UserError(
        f"{TITLE} folder {root} has no {STAGES[0][0]}: {HOW_TO_GET} and pass its folder with {root_parameter(options)}"
    )


def read_records(root: Path, options: DatasetOptions) -> list[ImageRecord]:
    """One record per patient whose DICOM exists, labeled with the maximum Target of its rows."""
    label_file, image_folder = find_stage(root, options)
    frame = read_csv(label_file, (PATIENT_COLUMN, TARGET_COLUMN), dtype={PATIENT_COLUMN: str})
    if frame[TARGET_COLUMN].isna().any() or not frame[TARGET_COLUMN].isin((0, 1)).all():
        raise UserError(f"CSV file {label_file} has {TARGET_COLUMN} values other than 0 and 1: check the file")
    targets = frame.groupby(PATIENT_COLUMN, sort=True)[TARGET_COLUMN].max()
    files = scan_files([image_folder], (DICOM_SUFFIX,))
    records = []
    missing = []
    for patient, target in targets.items():
        path = files.get(f"{patient}{DICOM_SUFFIX}")
        if path is None:
            missing.append(patient)
        else:
            records.append(ImageRecord(path=path, label=int(target), patient_id=str(patient)))
    if not records:
        raise UserError(
            f"{TITLE} folder {image_folder} has none of the {len(targets)} <patientId>.dcm files listed in "
            f"{label_file.name}: extract the images there"
        )
    report_missing(len(missing), missing, TITLE, image_folder)
    return records


@DATASETS.register("RSNAPneumonia")
def build_rsna_pneumonia(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """Binary pneumonia labels with seeded patient-level train / val / test splits."""
    root = require_root(root, TITLE, HOW_TO_GET, options)
    records = read_records(root, options)
    train, val, test = seeded_split(records, options.val_fraction, options.test_fraction, options.seed)
    return make_splits(
        "RSNAPneumonia",
        select(records, train),
        select(records, val),
        select(records, test),
        LABEL_INFO,
        options,
        logger,
    )
