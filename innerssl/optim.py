"""Optimizers and learning-rate schedules shared by SSL and classifier training."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS
from torch import nn

NO_DECAY_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
OPTIMIZER_NAMES = ("adamw", "lars")

logger = logging.getLogger(__name__)


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


def create_optimizer(
    groups: list[dict],
    name: str,
    learning_rate: float,
    lars_momentum: float = 0.9,
    lars_trust_coefficient: float = 1e-3,
) -> torch.optim.Optimizer:
    """``adamw``: AdamW. ``lars``: lightly's LARS (SGD with momentum and layer-wise adaptive rates, You et al. 2017).

    ``groups`` are ``parameter_groups``: lightly's LARS leaves parameters whose group has zero weight decay (norm
    layers and biases) out of the layer-wise adaptation as well, as SimCLR and BYOL do. With ``weight_decay`` 0
    every group has zero weight decay, so LARS degenerates to SGD with momentum (logged as a warning).
    """
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=learning_rate)
    if name == "lars":
        if all(group["weight_decay"] == 0 for group in groups if group["params"]):
            logger.warning("LARS with weight_decay 0 adapts no layer (lightly's LARS): it is SGD with momentum")
        return LARS(groups, lr=learning_rate, momentum=lars_momentum, trust_coefficient=lars_trust_coefficient)
    raise ValueError(f"Unknown optimizer '{name}'; expected one of {', '.join(OPTIMIZER_NAMES)}")


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
        """The optimizer over ``modules`` with the warmup-cosine schedule.

        AdamW, or LARS where the module has an ``optimizer_name`` hyperparameter set to ``lars`` (see
        ``create_optimizer``); both with no weight decay on norm layers and biases.
        """
        optimizer = create_optimizer(
            parameter_groups(modules, self.hparams.weight_decay),
            self.hparams.get("optimizer_name", "adamw"),
            self.hparams.learning_rate,
            lars_momentum=self.hparams.get("lars_momentum", 0.9),
            lars_trust_coefficient=self.hparams.get("lars_trust_coefficient", 1e-3),
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
