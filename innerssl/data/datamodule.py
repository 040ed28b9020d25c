"""DataLoaders for SSL training (two augmented views + a labeled linear-head set) and for classifiers.

Training batches of SSL runs are dicts ``{"ssl": ((view0, view1), labels), "linear_head": (images,
labels)}``: Lightning cycles the shorter loader (``max_size_cycle``). Validation dataloader 0 is the
SSL validation set, 1 the linear head's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from innerssl.data.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.datasets.base import DatasetSplits

Transform = Callable[[torch.Tensor], Any]

MAX_CONSECUTIVE_BAD_ITEMS = 100


class TransformedDataset(Dataset):
    """Applies ``transform`` to each image; items a dataset could not decode (None) are replaced by the next
    decodable one, so batches keep their size. The dataset itself logs and counts the bad files."""

    def __init__(self, dataset: Dataset, transform: Transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        for offset in range(MAX_CONSECUTIVE_BAD_ITEMS):
            item = self.dataset[(index + offset) % len(self)]
            if item is not None:
                image, label = item
                return self.transform(image), label
        raise RuntimeError(
            f"{MAX_CONSECUTIVE_BAD_ITEMS} consecutive images could not be read; see the bad-file log of the run"
        )


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, shuffle: bool, drop_last: bool, seed: int
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last and len(dataset) >= batch_size,  # type: ignore[arg-type]
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


class SSLDataModule(pl.LightningDataModule):
    """Two-view SSL batches plus, when given, the linear-head monitor's labeled batches."""

    def __init__(
        self,
        ssl_splits: DatasetSplits,
        ssl_transform: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        ssl_batch_size: int,
        linear_head_splits: DatasetSplits | None = None,
        linear_head_train_transform: Transform | None = None,
        linear_head_eval_transform: Transform | None = None,
        linear_head_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.ssl_splits = ssl_splits
        self.ssl_transform = ssl_transform
        self.ssl_batch_size = ssl_batch_size
        self.linear_head_splits = linear_head_splits
        self.linear_head_train_transform = linear_head_train_transform
        self.linear_head_eval_transform = linear_head_eval_transform
        self.linear_head_batch_size = linear_head_batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _ssl_loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = TransformedDataset(self.ssl_splits.get(split), self.ssl_transform)  # type: ignore[arg-type]
        return make_loader(dataset, self.ssl_batch_size, self.num_workers, shuffle, shuffle, self.seed)

    def _linear_head_loader(self, split: str, transform: Transform | None, shuffle: bool) -> DataLoader:
        assert self.linear_head_splits is not None and transform is not None
        dataset = TransformedDataset(self.linear_head_splits.get(split), transform)  # type: ignore[arg-type]
        return make_loader(dataset, self.linear_head_batch_size, self.num_workers, shuffle, shuffle, self.seed + 1)

    def train_dataloader(self) -> Any:
        ssl = self._ssl_loader("train", shuffle=True)
        if self.linear_head_splits is None:
            return ssl
        linear_head = self._linear_head_loader("train", self.linear_head_train_transform, shuffle=True)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: linear_head}

    def val_dataloader(self) -> Any:
        loaders = [self._ssl_loader("val", shuffle=False)]
        if self.linear_head_splits is not None:
            loaders.append(self._linear_head_loader("val", self.linear_head_eval_transform, shuffle=False))
        return loaders


class ClassifierDataModule(pl.LightningDataModule):
    """Labeled train / val / test loaders for a classifier."""

    def __init__(
        self,
        splits: DatasetSplits,
        train_transform: Transform,
        eval_transform: Transform,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, split: str, transform: Transform, shuffle: bool) -> DataLoader:
        dataset = TransformedDataset(self.splits.get(split), transform)  # type: ignore[arg-type]
        return make_loader(dataset, self.batch_size, self.num_workers, shuffle, shuffle, self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.train_transform, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_transform, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_transform, shuffle=False)
