"""The dataset layouts an image (restoration / segmentation) run accepts, recognised from the folder itself.

:func:`find_layout` looks at ``root`` and returns a :class:`~innerssl.data.biapy_layout.BiaPyLayout` whatever
the layout on disk, so everything downstream sees one kind of object:

- **BiaPy** (``root/train/x`` exists): read by :meth:`BiaPyLayout.find` unchanged. A missing ``test/x`` is
  logged, not carved: BiaPy users keep their own test set.
- **Medical Segmentation Decathlon** (``root/imagesTr`` exists): images from ``imagesTr/``, targets from
  ``labelsTr/`` (same file names; an image without a label or a label without an image is refused; no
  ``labelsTr/`` means no targets). ``imagesTs/`` is the test split only when ``labelsTs/`` labels it (the
  Decathlon ships ``imagesTs`` unlabeled, useless for scoring); otherwise it is left out and the test split is
  carved from the training images.
- **Flat folder** (otherwise): the supported image files directly in ``root/images/`` when that exists (the NIH
  ChestX-ray14 download: ``images/`` beside ``Data_Entry_2017.csv``), else directly in ``root``; sub-folders and
  other files are left out, archive debris is skipped. All images are unlabeled.
- **Datalist** (``datalist`` given, ``--datalist``): a Decathlon-style JSON file lists the samples instead
  (:mod:`innerssl.data.datalist`). A Decathlon folder's own ``dataset.json`` is read only when passed so.

With ``spatial_dims=3`` a sub-folder of DICOM files in any of these folders is one sample, a DICOM series
(:mod:`innerssl.data.dicom_volumes`).

Carving (Decathlon without labelled ``imagesTs``, flat folders): first ``test_fraction`` of the samples become
the test split (seeded with ``seed``), then ``val_fraction`` of what remains the validation split (seeded with
``seed + 1``), both by :func:`~innerssl.data.biapy_layout.carve_validation` on sorted names, so the carve depends
only on the names, the fractions and the seed, never on which files turn out unreadable.

Patients. In a flat folder whose names are all ``<digits>_<rest>`` (NIH's ``<patient>_<follow-up>.png``), the
carve is made over the groups of names sharing the digits before the first ``_`` (the patient), so that no
patient has images in two splits; the fractions then count patients, not images. The digits-only rule is
deliberate: a prefix such as ``cell_`` / ``tissue_`` names a category, not a subject, and grouping by it would
put a whole category into one split. Decathlon names (``hippocampus_001``) share one prefix and are carved per
image.

Headers are probed (no pixels read) as in :meth:`BiaPyLayout.find`: a file whose header is broken is left out
with its sample, recorded in ``bad_files`` and the optional :class:`BadFileLog`; channel counts must agree.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from innerssl.data.biapy_layout import (
    IMAGE_FOLDER,
    SPLITS,
    BiaPyLayout,
    carve_validation,
    check_spatial_dims,
    list_image_files,
)
from innerssl.errors import UserError

if TYPE_CHECKING:
    from innerssl.data.datasets.base import BadFileLog

logger = logging.getLogger(__name__)

__all__ = ["LAYOUT_KINDS", "carve_groups", "find_layout", "patient_groups"]

LAYOUT_KINDS = ("BiaPy", "Decathlon", "flat folder", "datalist")
DECATHLON_IMAGES, DECATHLON_LABELS = "imagesTr", "labelsTr"
DECATHLON_TEST_IMAGES, DECATHLON_TEST_LABELS = "imagesTs", "labelsTs"
FLAT_IMAGES = "images"
DECATHLON_DATALIST = "dataset.json"
VAL_FLAG, TEST_FLAG = "--val_fraction", "--test_fraction"
DATALIST_FLAG = "--datalist"
MAX_NAMES = 5

Pairs = dict[str, tuple[Path, Path | None]]
"""Sample name -> (image, target or None)."""


def find_layout(
    root: Path | str | None,
    spatial_dims: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    bad_file_log: BadFileLog | None = None,
    root_flag: str = "--local_dataset",
    channels: int | None = None,
    datalist: Path | str | None = None,
) -> BiaPyLayout:
    """The dataset at ``root`` as a :class:`BiaPyLayout`, whichever of the layouts in the module doc it uses;
    ``channels`` (``--in_channels``) as in :meth:`BiaPyLayout.find`. With ``datalist`` (``--datalist``) the JSON
    file lists the dataset and ``root``, if given, must be a folder holding it (see :mod:`.datalist`)."""
    check_spatial_dims(spatial_dims)
    _check_fraction(val_fraction, VAL_FLAG)
    _check_fraction(test_fraction, TEST_FLAG)
    if datalist is not None:
        from innerssl.data.datalist import datalist_layout  # it builds on this module's carving

        return datalist_layout(
            datalist, spatial_dims, val_fraction, test_fraction, seed, bad_file_log, channels, root, root_flag
        )
    if root is None:
        raise UserError(
            f"This model needs its dataset: pass its folder with {root_flag}=<folder> or a JSON datalist with "
            f"{DATALIST_FLAG}=<file.json>"
        )
    root = Path(root)
    if root.is_file() and root.suffix.lower() == ".json":
        raise UserError(
            f"{root_flag}={root} is a JSON file, not a folder: pass a datalist with {DATALIST_FLAG}={root} (it is "
            f"enough on its own)"
        )
    if not root.is_dir():
        raise UserError(f"Dataset folder {root} does not exist: pass the dataset's folder with {root_flag}")
    biapy = (root / "train" / IMAGE_FOLDER).is_dir()
    decathlon = (root / DECATHLON_IMAGES).is_dir()
    if biapy and decathlon:
        raise UserError(
            f"{root} holds both train/{IMAGE_FOLDER} (BiaPy layout) and {DECATHLON_IMAGES}/ (Decathlon layout): "
            f"keep one of them, or pass the folder of the one you mean with {root_flag}"
        )
    if biapy:
        layout = BiaPyLayout.find(root, spatial_dims, val_fraction, seed, bad_file_log, root_flag, channels)
        if not layout.splits["test"]:
            logger.info("%s has no test/%s: the BiaPy dataset has no test split", root, IMAGE_FOLDER)
        _log_layout(layout, "BiaPy")
        return layout
    if decathlon:
        if (root / DECATHLON_DATALIST).is_file():
            logger.info(
                "%s: reading the folders %s/ and %s/, not %s (pass %s=%s to use its lists instead)",
                root,
                DECATHLON_IMAGES,
                DECATHLON_LABELS,
                DECATHLON_DATALIST,
                DATALIST_FLAG,
                root / DECATHLON_DATALIST,
            )
        pairs, test_pairs = _decathlon_pairs(root, spatial_dims)
        kind = "Decathlon"
        groups = None
    else:
        folder = root / FLAT_IMAGES if (root / FLAT_IMAGES).is_dir() else root
        images = list_image_files(folder, spatial_dims)
        if not images:
            raise UserError(
                f"{folder} holds no supported image files, and {root} is neither a BiaPy dataset (train/"
                f"{IMAGE_FOLDER}/) nor a Decathlon one ({DECATHLON_IMAGES}/): pass a dataset folder with {root_flag}"
            )
        pairs = {name: (path, None) for name, path in images.items()}
        test_pairs = None
        kind = "flat folder"
        groups = patient_groups(list(pairs))
    splits, val_source = _carve(root, pairs, test_pairs, val_fraction, test_fraction, seed, groups)
    layout = BiaPyLayout.probed(root, spatial_dims, splits, val_source, bad_file_log, channels)
    if layout.val_source == "carved" and not layout.splits["val"]:
        layout.val_source = "none"  # every carved validation file was unreadable
    _log_layout(layout, kind)
    return layout


def _check_fraction(fraction: float, flag: str) -> None:
    if not 0 <= fraction < 1:  # also refuses NaN
        raise UserError(f"{flag}={fraction} must be at least 0 and below 1 (e.g. 0.1)")


def _names(names: Sequence[object]) -> str:
    shown = ", ".join(str(name) for name in names[:MAX_NAMES])
    return shown + (f" and {len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


# --- Decathlon -------------------------------------------------------------------------------------------------


def _decathlon_pairs(root: Path, spatial_dims: int) -> tuple[Pairs, Pairs | None]:
    """Training pairs from imagesTr / labelsTr, and test pairs from imagesTs / labelsTs when both exist."""
    pairs = _matched(root / DECATHLON_IMAGES, root / DECATHLON_LABELS, spatial_dims)
    if not pairs:
        raise UserError(f"{root / DECATHLON_IMAGES} holds no supported image files: add the training images")
    test_images, test_labels = root / DECATHLON_TEST_IMAGES, root / DECATHLON_TEST_LABELS
    if test_labels.is_dir() and not test_images.is_dir():
        raise UserError(f"{test_labels} has no {DECATHLON_TEST_IMAGES}/ beside it: add the images or remove it")
    if not test_images.is_dir():
        return pairs, None
    if not test_labels.is_dir():
        logger.info(
            "%s has no labels (no %s/) and is left out; the test split is carved from %s instead",
            test_images,
            DECATHLON_TEST_LABELS,
            DECATHLON_IMAGES,
        )
        return pairs, None
    test_pairs = _matched(test_images, test_labels, spatial_dims)
    return pairs, test_pairs or None


def _matched(image_folder: Path, label_folder: Path, spatial_dims: int) -> Pairs:
    """Name -> (image, label); labels only when ``label_folder`` exists, then one for every image and vice versa."""
    images = list_image_files(image_folder, spatial_dims)
    if not label_folder.is_dir():
        return {name: (path, None) for name, path in images.items()}
    labels = list_image_files(label_folder, spatial_dims)
    unlabelled = [images[name] for name in images if name not in labels]
    if unlabelled:
        raise UserError(
            f"{unlabelled[0]} has no label {label_folder / unlabelled[0].name}"
            f"{f' (and {len(unlabelled) - 1} more)' if len(unlabelled) > 1 else ''}: every image needs a label of "
            f"the same file name in {label_folder}; add it or remove the image"
        )
    orphans = [labels[name] for name in labels if name not in images]
    if orphans:
        raise UserError(
            f"{orphans[0]} has no image {image_folder / orphans[0].name}"
            f"{f' (and {len(orphans) - 1} more)' if len(orphans) > 1 else ''}: every label needs an image of the "
            f"same file name in {image_folder}; add it or remove the label"
        )
    return {name: (path, labels[name]) for name, path in images.items()}


# --- carving ---------------------------------------------------------------------------------------------------


def patient_groups(names: Sequence[str]) -> dict[str, list[str]] | None:
    """Names grouped by the digits before their first ``_`` (NIH's patient number), or None when some name has
    no such prefix or there would be only one group (see the module doc)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        prefix, underscore, _ = name.partition("_")
        if not underscore or not prefix.isdigit():
            return None
        groups.setdefault(prefix, []).append(name)
    return groups if len(groups) > 1 else None


def carve_groups(groups: dict[str, list[str]], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(kept, carved) names: :func:`carve_validation` over the group keys, each group kept whole."""
    kept_keys, carved_keys = carve_validation(list(groups), fraction, seed)
    kept = sorted(name for key in kept_keys for name in groups[key])
    return kept, sorted(name for key in carved_keys for name in groups[key])


def _carve_once(
    names: list[str], fraction: float, seed: int, groups: dict[str, list[str]] | None
) -> tuple[list[str], list[str]]:
    if groups is None:
        return carve_validation(names, fraction, seed)
    present = set(names)
    subset = {key: members for key, members in groups.items() if set(members) <= present}
    return carve_groups(subset, fraction, seed)


def _carve(
    root: Path,
    pairs: Pairs,
    test_pairs: Pairs | None,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: dict[str, list[str]] | None,
    val_pairs: Pairs | None = None,
    test_source: str = DECATHLON_TEST_IMAGES,
) -> tuple[dict[str, Pairs], str]:
    """Split ``pairs`` into train / val / test (test first, then val from the rest) and say where val came from;
    ``test_pairs`` / ``val_pairs`` (from ``test_source`` / a datalist), where given, are used instead of a carve."""
    unit = f"patients ({len(groups)} groups of names before the first '_')" if groups else "images"
    names = sorted(pairs)
    if test_pairs is not None:
        test_names: list[str] = []
        if test_fraction > 0:
            logger.info("%s: test images come from %s, so %s is not used", root, test_source, TEST_FLAG)
    else:
        names, test_names = _carve_once(names, test_fraction, seed, groups)
        if test_names:
            logger.info(
                "%s: carved %d of %d images as the test split (%s=%g of the %s, seed %d): %s",
                root,
                len(test_names),
                len(pairs),
                TEST_FLAG,
                test_fraction,
                unit,
                seed,
                _names(test_names),
            )
        else:
            logger.info("%s: no test split (%s=%g, %d images)", root, TEST_FLAG, test_fraction, len(pairs))
    if val_pairs is not None:
        train_names, val_source = names, "datalist"
        if val_fraction > 0:
            logger.info("%s: validation images are listed, so %s is not used", root, VAL_FLAG)
    else:
        train_names, val_names = _carve_once(names, val_fraction, seed + 1, groups)
        val_source = "carved" if val_names else "none"
        if val_names:
            logger.info(
                "%s: carved %d of %d remaining images as the validation split (%s=%g of the %s, seed %d): %s",
                root,
                len(val_names),
                len(names),
                VAL_FLAG,
                val_fraction,
                unit,
                seed + 1,
                _names(val_names),
            )
        else:
            logger.warning("%s: no validation split (%s=%g, %d images left)", root, VAL_FLAG, val_fraction, len(names))
    splits = {
        "train": {name: pairs[name] for name in train_names},
        "val": dict(val_pairs) if val_pairs is not None else {name: pairs[name] for name in val_names},
        "test": dict(test_pairs) if test_pairs is not None else {name: pairs[name] for name in test_names},
    }
    return splits, val_source


# --- probing ---------------------------------------------------------------------------------------------------


def _log_layout(layout: BiaPyLayout, kind: str) -> None:
    logger.info(
        "%s dataset %s (layout_kind=%s, %dD, %d channel(s), targets: %s): %s",
        kind,
        layout.root,
        kind,
        layout.spatial_dims,
        layout.channels,
        "none" if layout.target_channels is None else f"{layout.target_channels} channel(s)",
        ", ".join(f"{split} {len(layout.splits[split])}" for split in SPLITS),
    )
