"""Optimizers and learning-rate schedules shared by SSL and classifier training."""

from __future__ import annotations

import math
from collections.abc import Iterable

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


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the base learning rate: linear warmup from ~0, then cosine decay to 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps)
    )


def steps_for_epochs(epochs: float, total_steps: int, total_epochs: int) -> int:
    """Convert a number of epochs (e.g. warmup) into optimizer steps."""
    return int(round(epochs * total_steps / max(1, total_epochs)))
