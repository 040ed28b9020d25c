"""Decathlon-style JSON datalists (``--datalist``), the lists MONAI's ``load_decathlon_datalist`` reads::

    {"training":   [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}, ...],
     "validation": [{"image": ..., "label": ...}, ...],      optional
     "test":       [{"image": ...}, ...] or ["imagesTs/x.nii.gz", ...]   optional}

Other keys (the Decathlon's ``name``, ``labels``, ``modality``, ``numTraining``, ...) and other entry keys are
ignored. Paths are relative to the JSON file's folder (MONAI's default ``base_dir``) unless absolute; an image may
be a DICOM series folder with ``--spatial_dims=3``. Bare paths are accepted in ``test`` only, as in MONAI.

Splits are those of the JSON; what it leaves out is carved from ``training`` as :func:`find_layout` carves a
Decathlon folder (seeded, on sorted names): no (or an empty) ``validation`` -> ``--val_fraction``; no ``test``, or
an unlabelled ``test`` while ``training`` is labelled (the Decathlon's own ``imagesTs``, useless for scoring) ->
logged and ``--test_fraction``. An unlabelled ``test`` of an unlabelled dataset is kept.

Sample names are the file names without suffix (a series folder's whole name) and must be unique. Mistakes are one
line naming the JSON file, the split and entry and the fix: malformed JSON, no ``training`` list, an entry without
``image``, a missing image or label, a split where only some entries have labels, one image in two splits.

``--local_dataset`` beside ``--datalist`` must be a folder that holds the JSON (it is then the dataset's root);
alone, the JSON's folder is the root. A Decathlon folder's own ``dataset.json`` is read only when passed here.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from innerssl.data.biapy_layout import SUPPORTED_SUFFIXES, BiaPyLayout, check_spatial_dims, file_stem, file_suffix
from innerssl.data.dicom_volumes import is_dicom_series_folder
from innerssl.data.image_layouts import (
    DATALIST_FLAG,
    TEST_FLAG,
    VAL_FLAG,
    Pairs,
    _carve,
    _check_fraction,
    _log_layout,
)
from innerssl.errors import UserError

if TYPE_CHECKING:
    from innerssl.data.datasets.base import BadFileLog

logger = logging.getLogger(__name__)

__all__ = ["JSON_SPLITS", "datalist_layout", "read_datalist"]

JSON_SPLITS = {"training": "train", "validation": "val", "test": "test"}
"""The datalist's keys -> innerssl's split names."""
ENTRY_EXAMPLE = '{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}'


def datalist_layout(
    datalist: Path | str,
    spatial_dims: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bad_file_log: BadFileLog | None = None,
    channels: int | None = None,
    root: Path | str | None = None,
    root_flag: str = "--local_dataset",
) -> BiaPyLayout:
    """The dataset the JSON ``datalist`` lists as a :class:`BiaPyLayout` (see the module doc); ``root``:
    ``--local_dataset``, a folder holding the JSON, or None for the JSON's folder."""
    check_spatial_dims(spatial_dims)
    _check_fraction(val_fraction, VAL_FLAG)
    _check_fraction(test_fraction, TEST_FLAG)
    path = Path(datalist)
    dataset_root = _dataset_root(path, root, root_flag)
    listed = read_datalist(path, spatial_dims)
    train, val, test = listed["train"], listed.get("val"), listed.get("test")
    labelled = any(label is not None for _, label in train.values())
    if test is not None and labelled and all(label is None for _, label in test.values()):
        logger.info(
            "%s: its %d test entries have no labels and are left out; the test split is carved from training instead",
            path,
            len(test),
        )
        test = None
    splits, val_source = _carve(
        path, train, test, val_fraction, test_fraction, seed, None, val_pairs=val, test_source=f"{path.name}'s test"
    )
    layout = BiaPyLayout.probed(dataset_root, spatial_dims, splits, val_source, bad_file_log, channels)
    if layout.val_source == "carved" and not layout.splits["val"]:
        layout.val_source = "none"  # every carved validation file was unreadable
    _log_layout(layout, "datalist")
    return layout


def read_datalist(path: Path, spatial_dims: int) -> dict[str, Pairs]:
    """Split ('train', and 'val' / 'test' where listed and not empty) -> name -> (image, label or None), with
    every path resolved and checked; a mistake is a one-line :class:`UserError`."""
    content = _load(path)
    if not isinstance(content.get("training"), list) or not content["training"]:
        raise UserError(
            f"{path} has no 'training' list (or an empty one): add \"training\": [{ENTRY_EXAMPLE}, ...] "
            f"({DATALIST_FLAG} lists the dataset as the Decathlon's dataset.json does)"
        )
    base = path.parent
    result: dict[str, Pairs] = {}
    seen: dict[Path, tuple[str, str]] = {}
    names: dict[str, str] = {}
    for key, split in JSON_SPLITS.items():
        entries = content.get(key)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise UserError(
                f"{path}: '{key}' is a {type(entries).__name__}, not a list of entries like {ENTRY_EXAMPLE}"
            )
        if not entries:
            logger.info("%s: its '%s' list is empty, as if it were absent", path, key)
            continue
        pairs: Pairs = {}
        for index, entry in enumerate(entries):
            where = f"{key} entry {index}"
            image, label = _entry(path, key, where, entry)
            image_path = _existing(path, base, where, "image", image, spatial_dims)
            label_path = None if label is None else _existing(path, base, where, "label", label, spatial_dims)
            resolved = image_path.resolve()
            if resolved in seen:
                first_key, first = seen[resolved]
                twice = "twice" if first_key == key else "in two splits"
                raise UserError(
                    f"{path} lists the image {image_path} {twice} ({first} and {where}): list each image once"
                )
            seen[resolved] = key, where
            name = image_path.name if image_path.is_dir() else file_stem(image_path.name)
            if name in names:
                raise UserError(
                    f"{path}: {names[name]} and {where} share the sample name {name!r} (the file name without its "
                    "suffix), which names outputs: rename one of the files"
                )
            names[name] = where
            pairs[name] = (image_path, label_path)
        _check_labels(path, key, pairs, names)
        result[split] = pairs
    return result


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(
            f"{DATALIST_FLAG}={path} is not a file: pass the JSON datalist (training / validation / test entries)"
        )
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(
            f"{path} is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno}): fix the "
            f"{DATALIST_FLAG} file"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(
            f"Cannot read {DATALIST_FLAG}={path} ({error}): check that it is a readable UTF-8 file"
        ) from None
    if not isinstance(content, dict):
        raise UserError(
            f"{path} holds a JSON {type(content).__name__}, not an object with a 'training' list: write "
            f'{{"training": [{ENTRY_EXAMPLE}, ...]}}'
        )
    return content


def _entry(path: Path, key: str, where: str, entry: object) -> tuple[str, str | None]:
    """(image, label or None) of one entry as written."""
    if isinstance(entry, str):
        if key == "test":  # the Decathlon's own dataset.json lists its test images as bare paths
            return entry, None
        raise UserError(f'{path}: {where} is a bare path; write it as {{"image": {json.dumps(entry)}}}')
    if not isinstance(entry, dict):
        raise UserError(f"{path}: {where} is a {type(entry).__name__}; write it as {ENTRY_EXAMPLE}")
    if "image" not in entry:
        raise UserError(f'{path}: {where} has no "image" (keys: {", ".join(entry) or "none"}): add its image path')
    values = []
    for field in ("image", "label"):
        value = entry.get(field)
        if isinstance(value, list):
            raise UserError(
                f'{path}: {where} lists several files as its "{field}"; one file (or DICOM series folder) per '
                "entry is read: store the channels in one file"
            )
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UserError(f'{path}: {where} has the "{field}" {json.dumps(value)}; give a file path')
        values.append(value)
    return values[0], values[1]


def _existing(path: Path, base: Path, where: str, field: str, value: str, spatial_dims: int) -> Path:
    """The entry's file, relative to the JSON's folder unless absolute, checked to exist and to be readable."""
    file = Path(os.path.normpath(base / value))
    relative = "" if Path(value).is_absolute() else f" (relative paths are relative to {base})"
    if not file.exists():
        raise UserError(f"{path}: the {field} {file} of {where} does not exist: fix the path{relative}")
    if file.is_dir():
        if spatial_dims == 3 and is_dicom_series_folder(file):
            return file
        if spatial_dims == 3:
            raise UserError(
                f"{path}: the {field} {file} of {where} is a folder without DICOM files: list an image file or a "
                "folder of one DICOM series"
            )
        raise UserError(
            f"{path}: the {field} {file} of {where} is a folder: DICOM series folders are volumes, read with "
            "--spatial_dims=3; list image files for 2D data"
        )
    if file_suffix(file.name) not in SUPPORTED_SUFFIXES:
        raise UserError(
            f"{path}: the {field} {file} of {where} is not a supported image file (supported: "
            f"{', '.join(SUPPORTED_SUFFIXES)}): convert it or fix the path"
        )
    return file


def _check_labels(path: Path, key: str, pairs: Pairs, names: dict[str, str]) -> None:
    """A split's entries all have labels or none do; ``names``: sample name -> its entry, for the message."""
    with_label = [name for name, (_, label) in pairs.items() if label is not None]
    if 0 < len(with_label) < len(pairs):
        without = next(name for name, (_, label) in pairs.items() if label is None)
        raise UserError(
            f"{path}: {len(with_label)} of the {len(pairs)} '{key}' entries have a \"label\" and the others not "
            f"({names[without]} has none, {names[with_label[0]]} has one): give every {key} entry a label, or none"
        )


def _dataset_root(path: Path, root: Path | str | None, root_flag: str) -> Path:
    """The dataset's folder: ``root`` when it holds the JSON, the JSON's own folder without ``root``."""
    if root is None:
        return path.parent
    folder = Path(root)
    if not folder.is_dir() or not _inside(path, folder):
        raise UserError(
            f"{DATALIST_FLAG}={path} is not inside {root_flag}={folder}: pass {DATALIST_FLAG} alone (its paths "
            f"are relative to its own folder), or a {root_flag} folder that holds it"
        )
    return folder


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents
