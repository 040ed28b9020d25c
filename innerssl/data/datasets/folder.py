"""Any labeled image collection in class folders, in one of the two layouts public downloads use:

- ``root/<class>/<images>`` (torchvision's ImageFolder). Splits come from ``train.txt`` / ``val.txt`` (and
  optionally ``test.txt``) at the root, one path relative to the root per line, when present; otherwise from
  a seeded, class-stratified, patient-level split (``--val_fraction`` / ``--test_fraction``).
- ``root/<split>/<class>/<images>`` (Kaggle's "Chest X-Ray Images (Pneumonia)" of Kermany et al. 2018, many
  torchvision-style downloads), split folders named train/training, val/valid/validation, test/testing in any
  case. The publisher's test folder is the test split (no test folder: no test split, since carving one would
  silently shrink the training data the publisher chose). A missing or tiny val folder (see MIN_VAL_IMAGES)
  is merged into train and replaced by a seeded patient-level carve of ``--val_fraction``. A class that val or
  test has but train lacks is refused, as are split files beside split folders.

PNG, JPEG, TIFF or DICOM files count, in subfolders of a class folder too. Archive debris (``__MACOSX/``,
AppleDouble ``._*`` files, ``.DS_Store``, ``Thumbs.db``, ``desktop.ini`` and other hidden entries) is skipped
at any depth. A root that holds its split folders one or more wrapper folders down (``download/chest_xray/``)
is found, and an exact nested copy of it (``chest_xray/chest_xray/``) is ignored; anything ambiguous (two
different datasets, split folders next to class folders) is refused rather than guessed.

Patient ids come from the file names (``--folder_patient_pattern``; a file it does not match is its own
patient). Two classes make a binary task (sorted names, the second is positive), more a multiclass task.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageRecord, LabelInfo, Split
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
from innerssl.data.debris import is_debris
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

TITLE = "ImageFolder dataset"
LOG_NAME = "ImageFolder"
HOW_TO_GET = "put each class's images in their own subfolder root/<class name>/ (or root/<split>/<class name>/)"
SPLIT_FILES = {"train": "train.txt", "val": "val.txt", "test": "test.txt"}
REQUIRED_SPLIT_FILES = ("train", "val")
MIN_CLASSES = 2
COMMENT = "#"

SPLIT_FOLDER_NAMES: dict[str, Split] = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
"""Lower-cased folder names that mark a split folder; such a folder is never a class."""
SPLIT_NAMES_TEXT = "train|training, val|valid|validation, test|testing (any case)"
ACCEPTED_LAYOUTS = (
    f"lay the images out as root/<class>/<images> or as root/<split>/<class>/<images> with split folders "
    f"{SPLIT_NAMES_TEXT}"
)
MIN_VAL_IMAGES = 50
"""A val folder with fewer images is too small to select checkpoints or compare runs on (Kermany's has 16): it
is merged into train, and a patient-level validation split of --val_fraction is carved from train instead."""
MIN_VAL_IMAGES_PER_CLASS = 2
"""The same for a val folder with fewer images than this of some training class: with 0 or 1 images a class
gives no usable validation metric (binary AUROC needs both classes)."""
PATIENT_PATTERN_FLAG = "--folder_patient_pattern"

RelativePath = tuple[str, ...]
"""Path components of a file below the folder the user passed."""
PatientOf = Callable[[Path], str]


# --- finding the images and the layout ------------------------------------------------------------------


def find_image_files(root: Path) -> list[RelativePath]:
    """Every image file under ``root`` as its path components, sorted; debris is skipped at any depth.

    Symlinked folders are followed (datasets assembled from links), each real folder once so a link loop ends.
    """
    found: list[RelativePath] = []
    visited: set[str] = set()
    pending: list[tuple[Path, RelativePath]] = [(root, ())]
    while pending:
        folder, relative = pending.pop()
        real = os.path.realpath(folder)
        if real in visited:
            continue
        visited.add(real)
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if is_debris(entry.name):
                        continue
                    if entry.is_dir():
                        pending.append((Path(entry.path), (*relative, entry.name)))
                    elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES and entry.is_file():
                        found.append((*relative, entry.name))
        except OSError as error:
            logger.warning("%s: cannot list %s (%s); its images are left out", TITLE, folder, error)
    return sorted(found)


def split_folder_index(parts: RelativePath) -> int | None:
    """Index of the first folder (not the file name) in ``parts`` that has a split name, or None."""
    for index, name in enumerate(parts[:-1]):
        if name.lower() in SPLIT_FOLDER_NAMES:
            return index
    return None


def show(parts: RelativePath) -> str:
    return "/".join(parts) or "."


def find_split_root(
    root: Path, files: Sequence[RelativePath], options: DatasetOptions
) -> tuple[RelativePath, list[RelativePath]] | None:
    """The folder below ``root`` that holds the split folders and its files (relative to it); None for the
    class-folder layout (no split folder anywhere, outside split folders).

    A candidate is any folder with a split-named child; the shallowest is used. Deeper candidates with the same
    relative file names are copies (the nested ``chest_xray/chest_xray``) and ignored; a different one, or images
    outside the split folders (class folders beside split folders), is refused: either could be what the user
    meant, and guessing wrong trains on the wrong images without an error.
    """
    by_candidate: dict[RelativePath, set[RelativePath]] = {}
    outside: list[RelativePath] = []
    for parts in files:
        index = split_folder_index(parts)
        if index is None:
            outside.append(parts)
        else:
            by_candidate.setdefault(parts[:index], set()).add(parts[index:])
    if not by_candidate:
        return None
    candidates = sorted(by_candidate, key=lambda parts: (len(parts), parts))
    chosen = candidates[0]
    for other in candidates[1:]:
        if by_candidate[other] != by_candidate[chosen]:
            raise UserError(
                f"{TITLE} folder {root} holds two different datasets with split folders, {root.joinpath(*chosen)} "
                f"and {root.joinpath(*other)} (their file names differ): pass the one to use with "
                f"{root_parameter(options)} and move the other out of it"
            )
        logger.info(
            "%s: ignoring %s, an exact copy of %s (the same %d file names)",
            LOG_NAME,
            root.joinpath(*other),
            root.joinpath(*chosen),
            len(by_candidate[chosen]),
        )
    # Files loose in the folder passed or beside the split folders are in no class; the class layout ignores
    # loose files in its root too. Files in any other folder outside the split folders would be a class beside
    # split folders (or a second dataset): refuse.
    loose = [parts for parts in outside if len(parts) == 1 or parts[:-1] == chosen]
    misplaced = [parts for parts in outside if len(parts) > 1 and parts[:-1] != chosen]
    if misplaced:
        split_folders = sorted({show((*chosen, parts[0])) for parts in by_candidate[chosen]})
        other_folders = sorted({show(other_folder(parts, chosen)) for parts in misplaced})
        raise UserError(
            f"{TITLE} folder {root} mixes split folders ({format_names(split_folders)}) with other image folders "
            f"({format_names(other_folders)}): {ACCEPTED_LAYOUTS}"
        )
    if loose:
        logger.info(
            "%s: %d image(s) outside the split folders are in no class folder and are left out (%s)",
            LOG_NAME,
            len(loose),
            format_names(show(parts) for parts in loose),
        )
    if chosen:
        logger.info("%s: using %s, the folder under %s that holds the split folders", LOG_NAME, show(chosen), root)
    return chosen, sorted(by_candidate[chosen])


def other_folder(parts: RelativePath, chosen: RelativePath) -> RelativePath:
    """The folder of ``parts`` where it leaves the path to ``chosen``, to name it in an error."""
    shared = 0
    while shared < min(len(chosen), len(parts) - 1) and parts[shared] == chosen[shared]:
        shared += 1
    return parts[: shared + 1]


# --- patients -----------------------------------------------------------------------------------------------


def patient_rule(options: DatasetOptions) -> PatientOf:
    """File path -> patient id by ``options.folder_patient_pattern`` (see DatasetOptions); unmatched: the path."""
    if not options.folder_patient_pattern:
        return str
    try:
        pattern = re.compile(options.folder_patient_pattern)
    except re.error as error:
        raise UserError(
            f"{PATIENT_PATTERN_FLAG}={options.folder_patient_pattern!r} is not a regular expression ({error}): "
            "pass one whose first group matches the patient part of a file name, or an empty value"
        ) from None

    def patient_of(path: Path) -> str:
        match = pattern.match(path.stem)
        if match is None:
            return str(path)
        patient = next((group for group in match.groups() if group), match.group(0))
        return patient or str(path)

    return patient_of


def patient_level_split(
    records: Sequence[ImageRecord], val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded, class-stratified, patient-disjoint train / val / test indices.

    Each patient is stratified under the class most of its images have (ties: the lower index): stratifying
    images by their own class would split a patient with images of two classes across splits. With one patient
    per file this is exactly ``seeded_split(..., stratify=True)``.
    """
    labels: dict[str, list[int]] = {}
    for record in records:
        labels.setdefault(record.patient_id, []).append(int(record.label))  # type: ignore[arg-type]
    stratum = {
        patient: min(set(found), key=lambda label: (-found.count(label), label)) for patient, found in labels.items()
    }
    stratified = [dataclasses.replace(record, label=stratum[record.patient_id]) for record in records]
    return seeded_split(stratified, val_fraction, test_fraction, seed, stratify=True)


def warn_about_shared_patients(
    first: str, first_records: Sequence[ImageRecord], second: str, second_records: Sequence[ImageRecord]
) -> None:
    """A warning where published split folders share patients: the split is kept, but test results flatter."""
    shared = sorted({r.patient_id for r in first_records} & {r.patient_id for r in second_records})
    if shared:
        logger.warning(
            "%s: %d patient(s) have images in both %s and %s (%s); the published split is kept, so %s results "
            "may be optimistic",
            LOG_NAME,
            len(shared),
            first,
            second,
            format_names(shared),
            second,
        )


# --- the class-folder layout ----------------------------------------------------------------------------------


def read_split_file(path: Path) -> list[str]:
    """Relative paths listed in a split file, one per line; blank lines and # comments are skipped."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line.replace("\\", "/") for line in lines if line and not line.startswith(COMMENT)]


def present_split_files(folder: Path) -> dict[str, Path]:
    return {split: folder / name for split, name in SPLIT_FILES.items() if (folder / name).is_file()}


def split_from_files(root: Path, records: list[ImageRecord]) -> dict[str, list[ImageRecord]] | None:
    """Records per split as the split files list them, or None where the root has no split files."""
    present = present_split_files(root)
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


def require_classes(names: Sequence[str], where: Path, options: DatasetOptions) -> None:
    if len(names) < MIN_CLASSES:
        found = f"only {', '.join(names)}" if names else "none"
        raise UserError(
            f"{TITLE} folder {where} needs at least {MIN_CLASSES} class subfolders with images "
            f"({', '.join(IMAGE_SUFFIXES)}), found {found}: {HOW_TO_GET} and pass the root with "
            f"{root_parameter(options)}"
        )


def label_info_for(names: tuple[str, ...]) -> LabelInfo:
    return LabelInfo("binary" if len(names) == MIN_CLASSES else "multiclass", names)


def build_class_layout(root: Path, files: Sequence[RelativePath], options: DatasetOptions) -> DatasetSplits:
    """``root/<class>/<images>``: split files or a seeded patient-level split."""
    classes: dict[str, list[Path]] = {}
    for parts in files:
        if len(parts) > 1:  # files loose in the root belong to no class
            classes.setdefault(parts[0], []).append(root.joinpath(*parts))
    names = tuple(sorted(classes))
    require_classes(names, root, options)
    patient_of = patient_rule(options)
    records = [
        ImageRecord(path=path, label=index, patient_id=patient_of(path))
        for index, name in enumerate(names)
        for path in classes[name]
    ]
    from_files = split_from_files(root, records)
    if from_files is not None:
        train, val, test = from_files["train"], from_files["val"], from_files.get("test")
    else:
        indices = patient_level_split(records, options.val_fraction, options.test_fraction, options.seed)
        train, val, test = (select(records, part) for part in indices)
    return make_splits(LOG_NAME, train, val, test, label_info_for(names), options, logger)


# --- the split-folder layout ----------------------------------------------------------------------------------


def small_val_reason(val: Sequence[ImageRecord], names: Sequence[str]) -> str | None:
    """Why a val folder is too small to use (see MIN_VAL_IMAGES), or None where it will do."""
    if len(val) < MIN_VAL_IMAGES:
        return f"has only {len(val)} images (fewer than {MIN_VAL_IMAGES})"
    counts = Counter(record.label for record in val)
    scarce = [name for index, name in enumerate(names) if counts[index] < MIN_VAL_IMAGES_PER_CLASS]
    if scarce:
        return f"has fewer than {MIN_VAL_IMAGES_PER_CLASS} images of {format_names(scarce)}"
    return None


def build_split_layout(
    root: Path, split_root: Path, files: Sequence[RelativePath], options: DatasetOptions
) -> DatasetSplits:
    """``split_root/<split>/<class>/<images>``, ``files`` relative to ``split_root``."""
    # Split files would say another split than the split folders; which one the user meant is a guess.
    for folder in dict.fromkeys((root, split_root)):
        if split_files := present_split_files(folder):
            raise UserError(
                f"{TITLE} folder {folder} has both split folders and split files "
                f"({', '.join(path.name for path in split_files.values())}): remove the split files, or use them "
                f"with the class-folder layout root/<class>/<images>"
            )
    folder_of: dict[Split, str] = {}
    classes: dict[Split, dict[str, list[Path]]] = {}
    unclassified: list[RelativePath] = []
    for parts in files:
        split = SPLIT_FOLDER_NAMES[parts[0].lower()]
        other = folder_of.setdefault(split, parts[0])
        if other != parts[0]:
            raise UserError(
                f"{TITLE} folder {split_root} has two {split} folders, {other}/ and {parts[0]}/: merge them or "
                f"remove one"
            )
        if len(parts) == 2:
            unclassified.append(parts)
        else:
            classes.setdefault(split, {}).setdefault(parts[1], []).append(split_root.joinpath(*parts))
    if unclassified:
        logger.warning(
            "%s: %d image(s) lie directly in a split folder, in no class folder, and are left out (%s)",
            LOG_NAME,
            len(unclassified),
            format_names(show(parts) for parts in unclassified),
        )
    if "train" not in classes:
        present = ", ".join(f"{name}/" for name in folder_of.values())
        raise UserError(
            f"{TITLE} folder {split_root} has the split folder(s) {present} with class folders but no "
            f"train/ (or training/) folder with class folders: add it, or {ACCEPTED_LAYOUTS}"
        )
    train_folder = f"{folder_of['train']}/"
    names = tuple(sorted(classes["train"]))
    # A class that val or test holds but train lacks is refused: the classifier would have no output for it
    # (or an output never trained), so its images would be scored as some other class, a wrong result without
    # an error. Dropping them silently would change the published test set.
    for split in ("val", "test"):
        extra = sorted(set(classes.get(split, {})) - set(names))
        if extra:
            raise UserError(
                f"{TITLE} folder {split_root}: {folder_of[split]}/ has class folder(s) {format_names(extra)} that "
                f"{train_folder} lacks (train has {format_names(names)}): add their training images to "
                f"{train_folder} or remove them from {folder_of[split]}/"
            )
    require_classes(names, split_root / folder_of["train"], options)
    patient_of = patient_rule(options)

    def records_of(split: Split) -> list[ImageRecord]:
        found = classes.get(split, {})
        return [
            ImageRecord(path=path, label=index, patient_id=patient_of(path))
            for index, name in enumerate(names)
            for path in found.get(name, [])
        ]

    train, val = records_of("train"), records_of("val")
    if "val" in folder_of:
        small = small_val_reason(val, names)
        reason = f"{folder_of['val']}/ {small}; merged its {len(val)} images into {train_folder} and" if small else None
    else:
        reason = f"{split_root} has no val/ (or valid/, validation/) folder;"
    if reason is None:
        warn_about_shared_patients(train_folder, train, f"{folder_of['val']}/", val)
    else:
        # The small val's images are publisher-labeled training data, not test data: merging them into the pool
        # the validation split is carved from keeps them, and keeps the carve patient-disjoint across all of it.
        pool = train + val
        train_indices, val_indices, _ = patient_level_split(pool, options.val_fraction, 0.0, options.seed)
        train, val = select(pool, train_indices), select(pool, val_indices)
        logger.info(
            "%s: %s carved a patient-level validation split of %.0f%% of the patients from %s instead "
            "(--val_fraction): %d images",
            LOG_NAME,
            reason,
            100 * options.val_fraction,
            train_folder,
            len(val),
        )
    test: list[ImageRecord] | None = records_of("test") if "test" in classes else None
    if test is None:
        logger.info(
            "%s: %s has no test/ (or testing/) folder with class folders, so no test split", LOG_NAME, split_root
        )
    else:
        warn_about_shared_patients(f"{train_folder} + val", train + val, f"{folder_of['test']}/", test)
    return make_splits(LOG_NAME, train, val, test, label_info_for(names), options, logger)


@DATASETS.register("ImageFolder")
def build_image_folder(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """Class-folder images (``root/<class>/`` or ``root/<split>/<class>/``): binary for two classes, else multiclass."""
    root = require_root(root, TITLE, HOW_TO_GET, options)
    files = find_image_files(root)
    located = find_split_root(root, files, options)
    if located is None:
        return build_class_layout(root, files, options)
    split_root, split_files = located
    return build_split_layout(root, root.joinpath(*split_root), split_files, options)
