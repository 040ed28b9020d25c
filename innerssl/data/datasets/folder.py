"""Any labeled image collection laid out as ``root/<class name>/<images>`` (like torchvision's
ImageFolder): PNG, JPEG, TIFF or DICOM files, in subfolders of a class folder too.

Splits come from ``train.txt`` / ``val.txt`` (and optionally ``test.txt``) at the root, one path
relative to the root per line, when present; otherwise from a seeded split stratified by class, with
each file its own patient (a folder carries no patient ids; use the CSV dataset when it should).
Two classes make a binary task (sorted names, the second is positive), more a multiclass task.
"""

from __future__ import annotations

import logging
from pathlib import Path

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageRecord, LabelInfo
from innerssl.data.datasets.common import (
    IMAGE_SUFFIXES,
    format_names,
    make_splits,
    report_missing,
    require_root,
    root_parameter,
    seeded_split,
    select,
)
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "ImageFolder dataset"
HOW_TO_GET = "put each class's images in their own subfolder root/<class name>/"
SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
REQUIRED_SPLIT_FILES = ("train", "val")
MIN_CLASSES = 2
COMMENT = "#"


def class_images(root: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for every non-hidden subfolder holding images."""
    classes = {}
    for folder in sorted(child for child in root.iterdir() if child.is_dir() and not child.name.startswith(".")):
        files = sorted(
            path
            for path in folder.rglob("*")
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.name.startswith(".")
        )
        if files:
            classes[folder.name] = files
    return classes


def read_split_file(path: Path) -> list[str]:
    """Relative paths listed in a split file, one per line; blank lines and # comments are skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line.replace("\\", "/") for line in lines if line and not line.startswith(COMMENT)]


def split_from_files(root: Path, records: list[ImageRecord]) -> dict[str, list[ImageRecord]] | None:
    """Records per split as the split files list them, or None where the root has no split files."""
    present = {split: root / name for split, name in SPLIT_FILES.items() if (root / name).is_file()}
    if not present:
        return None
    absent = [SPLIT_FILES[split] for split in REQUIRED_SPLIT_FILES if split not in present]
    if absent:
        raise UserError(
            f"{TITLE} folder {root} has {', '.join(path.name for path in present.values())} "
            f"but no {', '.join(absent)}: add the missing split file(s) or remove them all for a seeded split"
        )
    by_relative = {record.path.relative_to(root).as_posix(): record for record in records}
    splits: dict[str, list[ImageRecord]] = {}
    for split, path in present.items():
        listed = read_split_file(path)
        missing = [entry for entry in listed if entry not in by_relative]
        report_missing(len(missing), missing, TITLE, root, listed_in=path.name)
        splits[split] = [by_relative[entry] for entry in listed if entry in by_relative]
    seen: dict[str, str] = {}
    for split, split_records in splits.items():
        for record in split_records:
            other = seen.setdefault(str(record.path), split)
            if other != split:
                raise UserError(
                    f"{TITLE} folder {root}: {record.path.relative_to(root)} is listed in both "
                    f"{SPLIT_FILES[other]} and {SPLIT_FILES[split]}: list each image in one split file only"
                )
    unlisted = [key for key, record in by_relative.items() if str(record.path) not in seen]
    if unlisted:
        logger.info(
            "%s: %d image(s) are in no split file and are left out (%s)", TITLE, len(unlisted), format_names(unlisted)
        )
    return splits


@DATASETS.register("ImageFolder")
def build_image_folder(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """Class-folder images: binary for two classes, multiclass for more."""
    root = require_root(root, TITLE, HOW_TO_GET, options)
    classes = class_images(root)
    if len(classes) < MIN_CLASSES:
        found = f"only {', '.join(classes)}" if classes else "none"
        raise UserError(
            f"{TITLE} folder {root} needs at least {MIN_CLASSES} class subfolders with images "
            f"({', '.join(IMAGE_SUFFIXES)}), found {found}: {HOW_TO_GET} and pass the root with "
            f"{root_parameter(options)}"
        )
    names = tuple(classes)
    label_info = LabelInfo("binary" if len(names) == MIN_CLASSES else "multiclass", names)
    records = [
        ImageRecord(path=path, label=index, patient_id=str(path))
        for index, name in enumerate(names)
        for path in classes[name]
    ]
    from_files = split_from_files(root, records)
    if from_files is not None:
        train, val, test = from_files["train"], from_files["val"], from_files.get("test")
    else:
        indices = seeded_split(records, options.val_fraction, options.test_fraction, options.seed, stratify=True)
        train, val, test = (select(records, part) for part in indices)
    return make_splits("ImageFolder", train, val, test, label_info, options, logger)
