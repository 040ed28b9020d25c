"""``checkpoints/last.ckpt``: written after every epoch and every few minutes, so that a killed run loses little.

Lightning's ``ModelCheckpoint(save_last=True)`` only writes ``last`` in a step where it saved another checkpoint,
and that rule has changed between Lightning releases; this callback writes it itself:

- at the end of every training epoch (after validation and after metrics.csv got the epoch's row), recording
  that training continues at the start of the next epoch;
- with ``every_n_minutes`` > 0, also after the first training batch that ends that long after the previous
  save, recording how many batches of the epoch are done. ``--resume`` then continues mid-epoch: the data
  modules' :class:`~innerssl.data.sampling.ResumableSampler` leaves out the batches already trained on.

Writes are atomic (:class:`~innerssl.outputs.durable_io.DurableCheckpointIO`, the trainer's checkpoint I/O):
a kill during a write leaves the previous ``last.ckpt``. Under DDP every process takes part in the save
(Lightning writes on global rank 0 only); rank 0's clock decides when a timed save is due, broadcast to all.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from innerssl.data.sampling import TrainingPosition

logger = logging.getLogger(__name__)

DISTRIBUTED_CHECK_EVERY_N_STEPS = 10
"""Under DDP the 'is a timed save due?' decision costs a broadcast: ask only every this many steps."""


class LastCheckpoint(Checkpoint):
    def __init__(self, path: Path, every_n_minutes: float = 0.0) -> None:
        self.path = Path(path)
        self.every_n_minutes = every_n_minutes
        self._last_save = time.monotonic()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_save = time.monotonic()

    def _timed_save_due(self, trainer: pl.Trainer, batch_idx: int) -> bool:
        if self.every_n_minutes <= 0:
            return False
        if trainer.world_size > 1 and (batch_idx + 1) % DISTRIBUTED_CHECK_EVERY_N_STEPS:
            return False
        due = time.monotonic() - self._last_save >= self.every_n_minutes * 60
        return bool(trainer.strategy.broadcast(due, src=0))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        batches_done = batch_idx + 1
        if batches_done >= trainer.num_training_batches or not self._timed_save_due(trainer, batch_idx):
            return  # the epoch's end saves anyway
        self.save(trainer, TrainingPosition(trainer.current_epoch, batches_done, trainer.world_size))
        logger.info(
            "Saved %s after %d of %d batches of epoch %d (--checkpoint_every_n_minutes=%g)",
            self.path,
            batches_done,
            trainer.num_training_batches,
            trainer.current_epoch,
            self.every_n_minutes,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # Under DDP the epoch's logged metrics are reduced across processes when first read; rank 0's progress bar
        # reads them before this hook and the other ranks must take part in that reduction before the save's
        # barrier, or the processes wait on different collectives forever (Lightning's ModelCheckpoint does the
        # same read first).
        _ = trainer.callback_metrics
        self.save(trainer, TrainingPosition(trainer.current_epoch + 1, 0, trainer.world_size))

    def save(self, trainer: pl.Trainer, position: TrainingPosition) -> None:
        datamodule = trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "position"):
            datamodule.position = position
        trainer.save_checkpoint(self.path)
        self._last_save = time.monotonic()
