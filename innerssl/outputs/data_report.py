"""What ``--check_data`` reports: per dataset, split and class, how many images were found and how many of them
could not be read (the files listed in the run's bad_files.txt)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from innerssl.data.datasets.base import UsedDataset, read_bad_file_log
from innerssl.outputs.splits_csv import format_label

logger = logging.getLogger(__name__)


def decode_every_image(used: Iterable[UsedDataset], splits: tuple[str, ...] = ("train", "val", "test")) -> None:
    """Read every image of ``splits`` once, so that unreadable files reach the bad-file log (the decode cache finds
    them in the splits it stores while it is built)."""
    done: set[int] = set()
    for dataset in used:
        for split in splits:
            images = getattr(dataset.splits, split)
            if images is None or id(images) in done:
                continue
            done.add(id(images))
            for index in tqdm(range(len(images)), desc=f"Reading {dataset.name} {split}", unit="image", leave=False):
                images[index]


def data_report(used: Iterable[UsedDataset], bad_file_log: Path) -> list[str]:
    """One line per dataset and split: images per class, unreadable ones in brackets."""
    bad = set(read_bad_file_log(bad_file_log))
    lines = []
    for dataset in used:
        info = dataset.splits.label_info
        for split in ("train", "val", "test"):
            images = getattr(dataset.splits, split)
            if images is None:
                continue
            records = getattr(images, "records", None)
            labels = [r.label for r in records] if records is not None else list(getattr(images, "labels", []))
            found: Counter[str] = Counter()
            unreadable: Counter[str] = Counter()
            for index in range(len(images)):
                label = labels[index] if index < len(labels) else None
                name = format_label(label, info)[1] or ("unlabeled" if info.task == "unlabeled" else "no label")
                for part in name.split(";") if info.task == "multilabel" else [name]:
                    found[part or "no finding"] += 1
                    if records is not None and str(records[index].path) in bad:
                        unreadable[part or "no finding"] += 1
            classes = ", ".join(
                f"{name}={count}" + (f" [{unreadable[name]} unreadable]" if unreadable[name] else "")
                for name, count in sorted(found.items())
            )
            total_bad = sum(1 for r in records if str(r.path) in bad) if records is not None else 0
            lines.append(
                f"{dataset.name} ({dataset.role}) {split}: {len(images)} images, {total_bad} unreadable ({classes})"
            )
    return lines


def log_data_report(used: Iterable[UsedDataset], bad_file_log: Path) -> list[str]:
    lines = data_report(used, bad_file_log)
    for line in lines:
        logger.info("%s", line)
    return lines
