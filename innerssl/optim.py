"""Optimizers and learning-rate schedules shared by SSL and classifier training."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

NO_DECAY_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Trainable parameters split so that norm layers and biases get no weight decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for module in modules:
        for submodule in module.modules():
            for name, parameter in submodule.named_parameters(recurse=False):
                if not parameter.requires_grad:
                    continue
                if isinstance(submodule, NO_DECAY_TYPES) or name == "bias":
                    no_decay.append(parameter)
                else:
                    decay.append(parameter)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class WarmupCosineModule(pl.LightningModule):
    """A LightningModule whose schedules follow the fraction of training done, not a count of steps.

    The learning rate (linear warmup over ``warmup_epochs``, then cosine decay to 0) and, in subclasses, other
    schedules such as BYOL's momentum are functions of ``training_fraction()``: epochs done plus the part of
    the current epoch, over ``max_epochs``. A run resumed with another number of processes (so another number
    of steps per epoch) therefore continues each schedule where it stopped, and a resumed run picks up the
    learning rate it is given now (e.g. scaled for the new global batch) instead of the checkpoint's.
    Subclasses declare ``learning_rate``, ``weight_decay`` and ``warmup_epochs`` hyperparameters.
    """

    _fraction_at_step_start: float = 0.0
    _fraction_at_step_end: float = 0.0

    def training_fraction(self) -> float:
        """Fraction of training done when the current optimizer step started, in [0, 1]."""
        return self._fraction_at_step_start

    def _epoch_fraction(self, epochs_done: float) -> float:
        return min(1.0, epochs_done / max(1, self.trainer.max_epochs or 1))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        batches = self.trainer.num_training_batches
        if batches and math.isfinite(batches):
            epoch = self.trainer.current_epoch
            self._fraction_at_step_start = self._epoch_fraction(epoch + batch_idx / batches)
            self._fraction_at_step_end = self._epoch_fraction(epoch + (batch_idx + 1) / batches)

    def learning_rate_factor(self) -> float:
        """Schedule value for the next step; Lightning steps the scheduler right after the optimizer."""
        max_epochs = max(1, self.trainer.max_epochs or 1)
        return warmup_cosine_factor_of_fraction(self._fraction_at_step_end, self.hparams.warmup_epochs / max_epochs)

    def configure_warmup_cosine(self, modules: Iterable[nn.Module]) -> dict:
        """AdamW over ``modules`` (no weight decay on norms and biases) with the warmup-cosine schedule."""
        optimizer = torch.optim.AdamW(
            parameter_groups(modules, self.hparams.weight_decay), lr=self.hparams.learning_rate
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: self.learning_rate_factor())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        # On resume the scheduler's base learning rates come from the checkpoint: use this run's rate.
        self._fraction_at_step_start = self._fraction_at_step_end = self._epoch_fraction(self.trainer.current_epoch)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [self.hparams.learning_rate for _ in scheduler.base_lrs]
            for group, base in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
                group["initial_lr"] = base
                group["lr"] = base * self.learning_rate_factor()

    def log_learning_rate(self, prefix: str) -> None:
        """The optimizer's current learning rate, averaged over the epoch (a column of metrics.csv)."""
        learning_rate = self.trainer.optimizers[0].param_groups[0]["lr"]
        self.log(f"{prefix}/learning_rate", learning_rate, on_step=False, on_epoch=True)


def warmup_cosine_factor_of_fraction(fraction: float, warmup_fraction: float) -> float:
    """Multiplier of the base learning rate at ``fraction`` of training: linear warmup, then cosine to 0."""
    if warmup_fraction > 0 and fraction < warmup_fraction:
        return max(fraction, 1e-3 * warmup_fraction) / warmup_fraction
    progress = (fraction - warmup_fraction) / max(1e-12, 1 - warmup_fraction)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress))))
