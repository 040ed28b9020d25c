"""A DemoSimCLR that records, in every DDP process, which samples it trained on and how Lightning samples each of
its loaders. ``test_ddp.py`` runs it with ``--config_module`` and reads ``<output_dir>/probe_rank<R>_epoch<E>.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from configs.demo import DemoSimCLR
from innerssl.data.datasets.base import DatasetSplits

SEEN: dict[str, list[int]] = {}
"""Indices each recorded dataset was read at in this process (num_workers=0: all reads are in this process)."""


class RecordingDataset(Dataset):
    def __init__(self, dataset: Dataset, name: str) -> None:
        self.dataset = dataset
        self.name = name

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        SEEN.setdefault(self.name, []).append(int(index))
        return self.dataset[index]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["dataset"], name)


def recording_train(splits: DatasetSplits, name: str) -> DatasetSplits:
    return dataclasses.replace(splits, train=RecordingDataset(splits.train, name))


def describe(loader: DataLoader) -> dict[str, Any]:
    sampler = loader.sampler
    return {
        "sampler": type(sampler).__name__,
        "distributed": isinstance(sampler, DistributedSampler),
        "indices": [int(i) for i in sampler],
        "dataset_size": len(loader.dataset),  # type: ignore[arg-type]
        "batch_size": loader.batch_size,
        "drop_last": loader.drop_last,
    }


class SamplingRecorder(pl.Callback):
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.val: list[dict[str, Any]] = []
        self.seen_in_training: dict[str, list[int]] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Only the training loop's reads: the augmentation previews (aug/*.png) read a few images at train start.
        SEEN.clear()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The epoch's training reads end here: the linear head's fit at validation reads its whole training split.
        if not trainer.sanity_checking:
            self.seen_in_training = {key: list(indices) for key, indices in SEEN.items()}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.val = [describe(loader) for loader in trainer.val_dataloaders]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "epoch": trainer.current_epoch,
            "train": {key: describe(loader) for key, loader in trainer.train_dataloader.items()},
            "val": self.val,
            "seen": self.seen_in_training,
        }
        path = self.folder / f"probe_rank{trainer.global_rank}_epoch{trainer.current_epoch}.json"
        path.write_text(json.dumps(record))


class ProbeSimCLR(DemoSimCLR):
    # The kNN monitor reads the labeled training set outside the training loop; keep it out of the record.
    knn_every_n_epochs = 0
    # Record the reads of the training loop itself: no decode-cache build reading every image up front, and
    # per-sample loading, which reads exactly the sampled indices.
    decode_cache = False
    augment_on_device = False

    def ssl_splits(self, run_folder: Path | None = None) -> DatasetSplits:
        return recording_train(super().ssl_splits(run_folder), "ssl")

    def linear_head_splits(self, run_folder: Path | None = None) -> DatasetSplits | None:
        splits = super().linear_head_splits(run_folder)
        return recording_train(splits, "linear_head") if splits is not None else None

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        return [*super().create_callbacks(datamodule), SamplingRecorder(Path(self.output_dir))]
