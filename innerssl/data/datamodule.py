"""DataLoaders for SSL training (two augmented views + a labeled linear-head set) and for classifiers.

Training batches of SSL runs are dicts ``{"ssl": ((view0, view1), labels), "linear_head": (images,
labels)}``: Lightning cycles the shorter loader (``max_size_cycle``). Validation dataloader 0 is the
SSL validation set, 1 the linear head's.

Where the augmentation runs on the device (:class:`~innerssl.data.pipeline.ImageStream`), the loaders yield
stored integer images and :meth:`on_after_batch_transfer` turns them into that layout once Lightning moved
the batch to the training device; the modules and callbacks only ever see the augmented batches.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from innerssl.data.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY, SSL_VAL_DATALOADER_INDEX
from innerssl.data.datasets.base import DatasetSplits, Split
from innerssl.data.pipeline import ImageStream, stream_seed


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
        pin_memory=torch.cuda.is_available(),  # page-locked batches: the copy to the GPU runs asynchronously
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
    )


class StreamDataModule(pl.LightningDataModule):
    """Shared plumbing: seeds the device augmentations per process and applies them after the transfer."""

    seed: int

    def streams(self) -> list[ImageStream]:
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        for index, stream in enumerate(self.streams()):
            stream.reseed(stream_seed(self.seed, rank, index))

    def is_training(self) -> bool:
        return self.trainer is not None and self.trainer.training


class SSLDataModule(StreamDataModule):
    """Two-view SSL batches plus, when given, the linear-head monitor's labeled batches.

    ``ssl_splits`` and ``linear_head_splits`` hold the stored datasets (see
    :meth:`~innerssl.data.pipeline.ImageStorage.store_splits`); the streams say how they are augmented.
    """

    def __init__(
        self,
        ssl_splits: DatasetSplits,
        ssl_stream: ImageStream,
        ssl_batch_size: int,
        linear_head_splits: DatasetSplits | None = None,
        linear_head_train_stream: ImageStream | None = None,
        linear_head_eval_stream: ImageStream | None = None,
        linear_head_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if ssl_stream.views != 2:
            raise ValueError("The SSL stream must produce two views per image")
        if linear_head_splits is not None and (linear_head_train_stream is None or linear_head_eval_stream is None):
            raise ValueError("A linear-head dataset needs a training and an evaluation stream")
        self.ssl_splits = ssl_splits
        self.ssl_stream = ssl_stream
        self.ssl_batch_size = ssl_batch_size
        self.linear_head_splits = linear_head_splits
        self.linear_head_train_stream = linear_head_train_stream
        self.linear_head_eval_stream = linear_head_eval_stream
        self.linear_head_batch_size = linear_head_batch_size
        self.num_workers = num_workers
        self.seed = seed

    def streams(self) -> list[ImageStream]:
        optional = [self.linear_head_train_stream, self.linear_head_eval_stream]
        return [self.ssl_stream, *(stream for stream in optional if stream is not None)]

    def _ssl_loader(self, split: Split, shuffle: bool) -> DataLoader:
        dataset = self.ssl_stream.loader_dataset(self.ssl_splits.get(split))
        return make_loader(dataset, self.ssl_batch_size, self.num_workers, shuffle, shuffle, self.seed)

    def _linear_head_loader(self, split: Split, stream: ImageStream | None, shuffle: bool) -> DataLoader:
        assert self.linear_head_splits is not None and stream is not None
        dataset = stream.loader_dataset(self.linear_head_splits.get(split))
        return make_loader(dataset, self.linear_head_batch_size, self.num_workers, shuffle, shuffle, self.seed + 1)

    def train_dataloader(self) -> Any:
        ssl = self._ssl_loader("train", shuffle=True)
        if self.linear_head_splits is None:
            return ssl
        linear_head = self._linear_head_loader("train", self.linear_head_train_stream, shuffle=True)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: linear_head}

    def val_dataloader(self) -> Any:
        loaders = [self._ssl_loader("val", shuffle=False)]
        if self.linear_head_splits is not None:
            loaders.append(self._linear_head_loader("val", self.linear_head_eval_stream, shuffle=False))
        return loaders

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.is_training():
            if isinstance(batch, dict):
                transformed = dict(batch)
                transformed[SSL_BATCH_KEY] = self.ssl_stream.apply(batch[SSL_BATCH_KEY])
                stream = self.linear_head_train_stream
                if LINEAR_HEAD_BATCH_KEY in batch and stream is not None:
                    transformed[LINEAR_HEAD_BATCH_KEY] = stream.apply(batch[LINEAR_HEAD_BATCH_KEY])
                return transformed
            return self.ssl_stream.apply(batch)
        if dataloader_idx == SSL_VAL_DATALOADER_INDEX:
            return self.ssl_stream.apply(batch)
        assert self.linear_head_eval_stream is not None
        return self.linear_head_eval_stream.apply(batch)


class ClassifierDataModule(StreamDataModule):
    """Labeled train / val / test loaders for a classifier; ``splits`` holds the stored datasets."""

    def __init__(
        self,
        splits: DatasetSplits,
        train_stream: ImageStream,
        eval_stream: ImageStream,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.splits = splits
        self.train_stream = train_stream
        self.eval_stream = eval_stream
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def streams(self) -> list[ImageStream]:
        return [self.train_stream, self.eval_stream]

    def _loader(self, split: Split, stream: ImageStream, shuffle: bool) -> DataLoader:
        dataset = stream.loader_dataset(self.splits.get(split))
        return make_loader(dataset, self.batch_size, self.num_workers, shuffle, shuffle, self.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.train_stream, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_stream, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_stream, shuffle=False)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return (self.train_stream if self.is_training() else self.eval_stream).apply(batch)
