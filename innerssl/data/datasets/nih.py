"""NIH ChestX-ray14: 112,120 frontal chest radiographs (PNG) with 14 text-mined findings.

The folder is the NIH download as is: ``Data_Entry_2017.csv`` (or the 2020 revision's
``Data_Entry_2017_v2020.csv``) and the PNGs, either flat (in ``images/`` or beside the CSV) or in the
``images_001/images ... images_012/images`` subfolders of the Kaggle mirror. Rows whose PNG is absent
are left out with a warning, so a partial download still trains.

When the official ``test_list.txt`` is present it defines the test set (and ``train_val_list.txt``,
if present, the rest); validation is a seeded patient-level split of the rest. Without the lists all
three splits are seeded patient-level splits. No patient's images are in two splits.

Registered: ``NIH`` (unlabeled, for SSL), ``NIHBinary`` (one finding, default Pneumonia, against the
rest) and ``NIHMultiLabel`` (the 14 findings, or the ``--label_names`` subset).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from innerssl.data.datasets.base import UNLABELED, DatasetOptions, DatasetSplits, ImageRecord, LabelInfo
from innerssl.data.datasets.common import (
    binary_label_info,
    check_label_names,
    format_names,
    make_splits,
    read_csv,
    report_missing,
    require_file,
    require_root,
    scan_files,
    seeded_split,
    select,
    train_val_split,
)
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "NIH ChestX-ray14"
HOW_TO_GET = "download the dataset from https://nihcc.app.box.com/v/ChestXray-NIHCC"
LABEL_FILES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
IMAGE_COLUMN = "Image Index"
FINDINGS_COLUMN = "Finding Labels"
PATIENT_COLUMN = "Patient ID"
FINDING_SEPARATOR = "|"
TRAIN_VAL_LIST = "train_val_list.txt"
TEST_LIST = "test_list.txt"
IMAGE_FOLDER_PATTERNS = ("images", "images_*/images", "images_*")
"""Where the PNGs may lie below the root, besides the root itself (flat download, Kaggle mirror)."""
FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
DEFAULT_BINARY_FINDING = "Pneumonia"


def image_folders(root: Path) -> list[Path]:
    """The folders that may hold the PNGs, in the order a file name is looked up."""
    folders = [root]
    for pattern in IMAGE_FOLDER_PATTERNS:
        folders.extend(sorted(path for path in root.glob(pattern) if path.is_dir()))
    return folders


def read_entries(root: Path, options: DatasetOptions) -> list[tuple[ImageRecord, frozenset[str]]]:
    """Each row whose PNG exists as an (unlabeled) record with its findings."""
    label_file = require_file(root, LABEL_FILES, TITLE, HOW_TO_GET, options)
    frame = read_csv(
        label_file, (IMAGE_COLUMN, FINDINGS_COLUMN, PATIENT_COLUMN), dtype={PATIENT_COLUMN: str}, keep_default_na=False
    )
    files = scan_files(image_folders(root), (".png",))
    entries = []
    missing = []
    for name, findings, patient in zip(frame[IMAGE_COLUMN], frame[FINDINGS_COLUMN], frame[PATIENT_COLUMN]):
        path = files.get(name)
        if path is None:
            missing.append(name)
            continue
        record = ImageRecord(path=path, patient_id=str(patient).strip())
        entries.append((record, frozenset(finding.strip() for finding in findings.split(FINDING_SEPARATOR))))
    if not entries:
        raise UserError(
            f"{TITLE} folder {root} has none of the {len(frame)} PNG files listed in {label_file.name} "
            f"(looked in {root}, images/ and images_*/images/): extract the image archives there"
        )
    report_missing(len(missing), missing, TITLE, root)
    return entries


def read_list(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def split_records(
    root: Path, records: list[ImageRecord], options: DatasetOptions
) -> tuple[list[ImageRecord], list[ImageRecord], list[ImageRecord]]:
    """Train / val / test records: the official lists when present, else seeded patient-level splits."""
    if not (root / TEST_LIST).is_file():
        if (root / TRAIN_VAL_LIST).is_file():
            logger.warning("%s: %s without %s; using seeded splits instead", TITLE, TRAIN_VAL_LIST, TEST_LIST)
        train, val, test = seeded_split(records, options.val_fraction, options.test_fraction, options.seed)
        return select(records, train), select(records, val), select(records, test)

    test_names = read_list(root / TEST_LIST)
    test = [record for record in records if record.path.name in test_names]
    rest = [record for record in records if record.path.name not in test_names]
    if (root / TRAIN_VAL_LIST).is_file():
        train_val_names = read_list(root / TRAIN_VAL_LIST)
        unlisted = [record.path.name for record in rest if record.path.name not in train_val_names]
        if unlisted:
            logger.warning(
                "%s: %d image(s) are in neither %s nor %s and are left out (%s)",
                TITLE,
                len(unlisted),
                TRAIN_VAL_LIST,
                TEST_LIST,
                format_names(unlisted),
            )
        rest = [record for record in rest if record.path.name in train_val_names]
    test_patients = {record.patient_id for record in test}
    overlapping = [record for record in rest if record.patient_id in test_patients]
    if overlapping:
        logger.warning(
            "%s: %d train/val image(s) belong to patients of %s and are left out to keep splits patient-disjoint",
            TITLE,
            len(overlapping),
            TEST_LIST,
        )
        rest = [record for record in rest if record.patient_id not in test_patients]
    train, val = train_val_split(rest, options)
    return select(rest, train), select(rest, val), test


Labeler = Callable[[frozenset[str]], int | tuple[float, ...]]
"""An image's findings -> its label."""


def build(
    name: str, root: Path | None, options: DatasetOptions, label_info: LabelInfo, labeler: Labeler
) -> DatasetSplits:
    """Read the folder, label each record with ``labeler(findings)`` and split it."""
    root = require_root(root, TITLE, HOW_TO_GET, options)
    records = [
        ImageRecord(record.path, labeler(findings), record.patient_id)
        for record, findings in read_entries(root, options)
    ]
    train, val, test = split_records(root, records, options)
    return make_splits(name, train, val, test, label_info, options, logger)


@DATASETS.register("NIH", folder_family="NIH")
def build_nih(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """All images without labels, for self-supervised training."""
    return build("NIH", root, options, UNLABELED, lambda findings: -1)


@DATASETS.register("NIHBinary", folder_family="NIH")
def build_nih_binary(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """1 where the image's findings include the first of ``label_names`` (default Pneumonia), else 0."""
    finding = options.label_names[0] if options.label_names else DEFAULT_BINARY_FINDING
    check_label_names([finding], FINDINGS, TITLE)
    return build("NIHBinary", root, options, binary_label_info(finding), lambda findings: int(finding in findings))


@DATASETS.register("NIHMultiLabel", folder_family="NIH")
def build_nih_multilabel(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """A 0/1 float per finding (all 14, or ``label_names`` in that order); "No Finding" is all zeros."""
    names = tuple(options.label_names) or FINDINGS
    check_label_names(names, FINDINGS, TITLE)
    return build(
        "NIHMultiLabel",
        root,
        options,
        LabelInfo("multilabel", names),
        lambda findings: tuple(float(name in findings) for name in names),
    )
