"""DataLoaders for SSL training (the method's augmented views + a labeled linear-head set) and for classifiers.

Training batches of SSL runs are dicts ``{"ssl": (views, labels), "linear_head": (images, labels)}``, ``views``
a sequence of view batches in the order of the method's view groups (two for most methods, DINO's global and
local crops for multi-crop): the linear head's loader gives exactly one batch per SSL batch (passing over its
data as often as that takes), so an epoch is one pass over the SSL data. Validation dataloader 0 is the SSL
validation set (the same views as training), 1 the linear head's.

Training loaders draw their order from :class:`~innerssl.data.sampling.ResumableSampler`: a run resumed from a
mid-epoch checkpoint trains on exactly the batches that epoch had left (the position comes back through
:meth:`StreamDataModule.load_state_dict`).

Where the augmentation runs on the device (:class:`~innerssl.data.pipeline.ImageStream`), the loaders yield
stored integer images and :meth:`on_after_batch_transfer` turns them into that layout once Lightning moved
the batch to the training device; the modules and callbacks only ever see the augmented batches.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from innerssl.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY, SSL_VAL_DATALOADER_INDEX
from innerssl.data.datasets.base import DatasetSplits, Split, UsedDataset
from innerssl.data.pipeline import ImageStream, stream_seed
from innerssl.data.sampling import ResumableSampler, TrainingPosition

POSITION_KEY = "position"


def make_loader(
    dataset: Dataset, batch_size: int, num_workers: int, sampler: ResumableSampler | None = None
) -> DataLoader:
    """A training loader (full batches from ``sampler``) or, without a sampler, an evaluation loader in order."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=sampler is not None and len(sampler) >= batch_size,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=torch.cuda.is_available(),  # page-locked batches: the copy to the GPU runs asynchronously
    )


class StreamDataModule(pl.LightningDataModule):
    """Shared plumbing: seeds the device augmentations per process and applies them after the transfer; training
    loaders that continue where a checkpoint stopped."""

    seed: int
    position: TrainingPosition | None = None
    """Where training stands, set just before a checkpoint is written (saved with it) and read back on resume."""
    resume_position: TrainingPosition | None = None

    used_datasets: list[UsedDataset] = []
    """The datasets as they were built (before storage), set by the container: splits.csv lists them."""

    def streams(self) -> list[ImageStream]:
        raise NotImplementedError

    def stream_previews(self) -> list[tuple[str, ImageStream, Dataset]]:
        """(name, stream, stored training split) of every training stream, for the aug/ previews."""
        raise NotImplementedError

    def setup(self, stage: str) -> None:
        rank = self.trainer.global_rank if self.trainer is not None else 0
        for index, stream in enumerate(self.streams()):
            stream.reseed(stream_seed(self.seed, rank, index))

    def is_training(self) -> bool:
        return self.trainer is not None and self.trainer.training

    # --- resumable order ------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {POSITION_KEY: self.position.as_dict()} if self.position is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        if POSITION_KEY in state_dict:
            self.resume_position = TrainingPosition.from_dict(state_dict[POSITION_KEY])

    def processes(self) -> tuple[int, int]:
        """(number of training processes, this one's rank)."""
        if self.trainer is None:
            return 1, 0
        return self.trainer.world_size, self.trainer.global_rank

    def train_sampler(
        self, dataset: Dataset, batch_size: int, seed: int, num_batches: int | None = None
    ) -> ResumableSampler:
        """This process's share of ``dataset`` per epoch (``num_batches`` batches of it, if given), starting where
        a resumed checkpoint stopped."""
        world_size, rank = self.processes()
        resume = self.resume_position or TrainingPosition()
        return ResumableSampler(
            dataset,
            num_replicas=world_size,
            rank=rank,
            seed=seed,
            num_samples=num_batches * batch_size if num_batches is not None else None,
            resume_epoch=resume.epoch,
            resume_samples_done=resume.samples_done(batch_size),
        )


class SSLDataModule(StreamDataModule):
    """SSL batches of the method's views plus, when given, the linear-head monitor's labeled batches.

    The SSL validation set goes through the same stream as training, so ``ssl/val_loss`` is the training loss's
    measure on held-out images (every view, DINO's local crops included).

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
        if ssl_stream.view_groups is None:
            raise ValueError("The SSL stream must produce the method's views: ImageStream(..., views=<view groups>)")
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

    def stream_previews(self) -> list[tuple[str, ImageStream, Dataset]]:
        previews = [("ssl", self.ssl_stream, self.ssl_splits.train)]
        if self.linear_head_splits is not None and self.linear_head_train_stream is not None:
            previews.append(("linear_head", self.linear_head_train_stream, self.linear_head_splits.train))
        return previews

    def train_dataloader(self) -> Any:
        dataset = self.ssl_stream.loader_dataset(self.ssl_splits.train)
        ssl = make_loader(
            dataset, self.ssl_batch_size, self.num_workers, self.train_sampler(dataset, self.ssl_batch_size, self.seed)
        )
        if self.linear_head_splits is None:
            return ssl
        assert self.linear_head_train_stream is not None
        labeled = self.linear_head_train_stream.loader_dataset(self.linear_head_splits.train)
        # One labeled batch per SSL batch; no bigger than the labeled share, so a batch holds no image twice.
        batch_size = min(self.linear_head_batch_size, -(-len(labeled) // self.processes()[0]))  # type: ignore[arg-type]
        sampler = self.train_sampler(labeled, batch_size, self.seed + 1, num_batches=len(ssl))
        linear_head = make_loader(labeled, batch_size, self.num_workers, sampler)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: linear_head}

    def val_dataloader(self) -> Any:
        loaders = [
            make_loader(
                self.ssl_stream.loader_dataset(self.ssl_splits.get("val")), self.ssl_batch_size, self.num_workers
            )
        ]
        if self.linear_head_splits is not None:
            assert self.linear_head_eval_stream is not None
            dataset = self.linear_head_eval_stream.loader_dataset(self.linear_head_splits.get("val"))
            loaders.append(make_loader(dataset, self.linear_head_batch_size, self.num_workers))
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
        steps_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
        self.splits = splits
        self.train_stream = train_stream
        self.eval_stream = eval_stream
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        """Training batches per epoch whatever the training split's size (a small label-fraction subset is passed
        over several times per epoch, reshuffled each pass); None: one pass over the split."""

    def streams(self) -> list[ImageStream]:
        return [self.train_stream, self.eval_stream]

    def stream_previews(self) -> list[tuple[str, ImageStream, Dataset]]:
        return [("classifier", self.train_stream, self.splits.train)]

    def _eval_loader(self, split: Split) -> DataLoader:
        return make_loader(self.eval_stream.loader_dataset(self.splits.get(split)), self.batch_size, self.num_workers)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_stream.loader_dataset(self.splits.train)
        batch_size = self.batch_size
        if self.steps_per_epoch is not None:  # no larger than a process's share: a batch never holds an image twice
            batch_size = min(batch_size, -(-len(dataset) // self.processes()[0]))  # type: ignore[arg-type]
        sampler = self.train_sampler(dataset, batch_size, self.seed, num_batches=self.steps_per_epoch)
        return make_loader(dataset, batch_size, self.num_workers, sampler)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return (self.train_stream if self.is_training() else self.eval_stream).apply(batch)
