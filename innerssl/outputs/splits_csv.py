"""``splits.csv``: one row per image of every dataset a run used, so a reader can audit leakage and reproduce it.

Columns: ``dataset`` (registered name), ``role`` (``ssl``, ``linear_head`` or ``classifier``), ``split``,
``index`` (position in that split), ``path`` (the image file, where the dataset has files), ``label`` (the class
index; for multilabel datasets the per-finding values joined by ``;``, empty = not given), ``label_name`` (class
names; for multilabel the positive findings), ``patient_id`` (where known).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from innerssl.data.datasets.base import ImageRecord, LabelInfo, UsedDataset

SPLITS_CSV = "splits.csv"
COLUMNS = ("dataset", "role", "split", "index", "path", "label", "label_name", "patient_id")


def _records(dataset: Dataset) -> list[ImageRecord] | None:
    records = getattr(dataset, "records", None)
    return list(records) if records is not None else None


def _labels(dataset: Dataset) -> Sequence[Any] | None:
    labels = getattr(dataset, "labels", None)
    return list(labels) if labels is not None else None


def format_label(label: Any, info: LabelInfo) -> tuple[str, str]:
    """(label, label_name) cells of one image."""
    if info.task == "unlabeled" or label is None:
        return "", ""
    if info.task == "multilabel":
        values = [float(value) for value in label]
        cells = ";".join("" if math.isnan(value) else f"{value:g}" for value in values)
        positives = [name for name, value in zip(info.class_names, values) if value == 1]
        return cells, ";".join(positives)
    index = int(label)
    if index < 0:
        return "", ""
    names = info.class_names
    return str(index), names[index] if index < len(names) else ""


def split_rows(used: UsedDataset) -> Iterator[dict[str, Any]]:
    info = used.splits.label_info
    for split in ("train", "val", "test"):
        dataset = getattr(used.splits, split)
        if dataset is None:
            continue
        records = _records(dataset)
        labels = [record.label for record in records] if records is not None else _labels(dataset)
        for index in range(len(dataset)):  # type: ignore[arg-type]
            record = records[index] if records is not None else None
            label, label_name = format_label(labels[index] if labels is not None else None, info)
            yield {
                "dataset": used.name,
                "role": used.role,
                "split": split,
                "index": index,
                "path": str(record.path) if record is not None else "",
                "label": label,
                "label_name": label_name,
                "patient_id": record.patient_id if record is not None else "",
            }


def write_splits_csv(used: Iterable[UsedDataset], target: Path) -> int:
    """Write every image of ``used`` to ``target``; returns the number of rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for dataset in used:
            for row in split_rows(dataset):
                writer.writerow(row)
                rows += 1
    return rows


IMAGE_COLUMNS = ("split", "index", "name", "path", "target_path")


def write_image_splits_csv(used_images: dict[str, Sequence[Any]], target: Path) -> int:
    """``splits.csv`` of a whole-image run (restoration, segmentation): one row per image it loaded, with its split,
    name, file and target file (``LoadedImage``s); returns the number of rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(IMAGE_COLUMNS)
        for split, images in used_images.items():
            for index, image in enumerate(images):
                target_path = getattr(image, "target_source", None)
                writer.writerow(
                    [split, index, image.name, str(image.source), "" if target_path is None else target_path]
                )
                rows += 1
    return rows
