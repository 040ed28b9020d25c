"""The exponential-moving-average (EMA) target networks of BYOL, DINO and MoCo v3, in one place.

A method with a target (BYOL's target, DINO's teacher, MoCo v3's momentum encoder) subclasses
``MomentumSSLModule``: it declares a ``base_momentum`` hyperparameter, makes its targets with
``momentum_copy`` and lists the (online, target) pairs in ``momentum_pairs``. Before every training step
each target moves towards its online module,

    target <- momentum * target + (1 - momentum) * online,

with ``momentum`` on a cosine schedule from ``base_momentum`` to 1 that follows ``training_fraction()``
(so it continues where it stopped when a run is resumed with another number of steps per epoch). The
momentum is logged as ``ssl/<method>_momentum``.
"""

from __future__ import annotations

import copy
import math
from typing import TypeVar

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from innerssl.ssl.base import SSLModule

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def cosine_momentum(base_momentum: float, fraction: float) -> float:
    """Cosine from ``base_momentum`` (fraction 0) to 1 (fraction 1)."""
    return 1.0 - (1.0 - base_momentum) * (math.cos(math.pi * fraction) + 1) / 2


def momentum_copy(module: ModuleT, new: ModuleT | None = None) -> ModuleT:
    """A copy of ``module`` that only the EMA update changes: its parameters get no gradients.

    ``new``: a freshly built module of the same architecture to load ``module``'s state into, for modules that
    ``copy.deepcopy`` cannot copy (those with ``torch.nn.utils.weight_norm``, such as DINO's head).
    """
    if new is None:
        target = copy.deepcopy(module)
    else:
        target = new
        target.load_state_dict(module.state_dict())
    deactivate_requires_grad(target)
    return target


class MomentumSSLModule(SSLModule):
    """An SSL method with EMA target copies of some of its online modules."""

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs that the EMA update keeps in step."""
        raise NotImplementedError

    def on_encoder_weights_loaded(self) -> None:
        # The targets start as copies of the online networks, so they start from the loaded weights too.
        for online, target in self.momentum_pairs():
            target.load_state_dict(online.state_dict())

    def current_momentum(self) -> float:
        """Cosine from ``base_momentum`` to 1 over the fraction of training done (robust to resuming elsewhere)."""
        return cosine_momentum(self.hparams.base_momentum, self.training_fraction())

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online, for every pair."""
        for online, target in self.momentum_pairs():
            update_momentum(online, target, momentum)

    def on_train_batch_start_ssl(self) -> None:
        momentum = self.current_momentum()
        self.update_target(momentum)
        self.log(f"ssl/{self.method_name.lower()}_momentum", momentum, on_step=True, on_epoch=False)
