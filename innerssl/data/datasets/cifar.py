"""CIFAR10 and CIFAR100 through torchvision (its own folder layout, ``cifar-10-batches-py/``).

The CIFAR test set serves as validation set (as in InnerEye's CIFAR configs) and as test set.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.datasets import CIFAR10, CIFAR100

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, LabelInfo, file_stats, report_splits
from innerssl.errors import UserError
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)


class CIFARTensors(Dataset):
    """A torchvision CIFAR dataset as float32 (3, 32, 32) tensors in [0, 1] with int labels."""

    def __init__(self, dataset: CIFAR10) -> None:
        self.images = dataset.data  # uint8 (N, 32, 32, 3), already in memory
        self.label_array = np.asarray(dataset.targets, dtype=np.int64)
        # What the decode cache's key needs; the torchvision dataset itself is not kept (it holds a copy).
        self.source = type(dataset).__qualname__
        self.root = Path(dataset.root)
        self.train = bool(dataset.train)
        batches = dataset.train_list if dataset.train else dataset.test_list
        self.batch_files = [self.root / dataset.base_folder / name for name, _ in batches]

    def cache_fingerprint(self) -> dict[str, Any]:
        """The decode cache's key material: which CIFAR, its folder, the split and its batch files' stats."""
        return {
            "type": type(self).__qualname__,
            "source": self.source,
            "root": str(self.root),
            "train": self.train,
            "batch_files": [[str(path), *file_stats(path)] for path in self.batch_files],
        }

    def __len__(self) -> int:
        return len(self.label_array)

    @property
    def labels(self) -> list[int]:
        return self.label_array.tolist()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float().div_(255)
        return image, int(self.label_array[index])


def _build(name: str, dataset_class: type[CIFAR10], root: Path | None, options: DatasetOptions) -> DatasetSplits:
    parameter = options.root_parameter
    if root is None:
        raise UserError(f"{name} needs a folder: pass it with {parameter} (add --download_datasets to fetch it)")
    download = options.download
    try:
        train = dataset_class(str(root), train=True, download=download)
        test = dataset_class(str(root), train=False, download=download)
    except RuntimeError as error:
        raise UserError(
            f"{name} not found in {root} ({error}): pass the folder holding {dataset_class.base_folder}/ with "
            f"{parameter}, or add --download_datasets"
        ) from None
    classes = tuple(train.classes)
    splits = DatasetSplits(
        train=CIFARTensors(train),
        val=CIFARTensors(test),
        test=CIFARTensors(test),
        label_info=LabelInfo("multiclass", classes),
    )
    logger.info(report_splits(name, splits))
    return splits


@DATASETS.register("CIFAR10", folder_family="CIFAR")
def build_cifar10(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    return _build("CIFAR10", CIFAR10, root, options)


@DATASETS.register("CIFAR100", folder_family="CIFAR")
def build_cifar100(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    return _build("CIFAR100", CIFAR100, root, options)
