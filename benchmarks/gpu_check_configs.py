"""The demo configs with a callback that records what a run really did, for ``benchmarks/gpu_check.py``.

Loaded with ``--config_module=benchmarks/gpu_check_configs.py`` (the ordinary way to add models): each class is
the demo config of its name, unchanged, plus :class:`RunProbe`. At the end of training the probe writes
``<run folder>/gpu_check_probe_rank<R>.json`` on every process: the strategy, world size and process-group
backend Lightning used, the SyncBatchNorm and plain BatchNorm layers of the trained module, which of its networks
are compiled, whether its convolution weights are channels_last, the precision and gradient scaler, the steps
trained, the last logged losses and the peak GPU memory. gpu_check compares these with what it asked for, so a
flag that silently did nothing (a DDP run that fell back to one plain process, a compile that never happened)
fails the check instead of passing it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from configs.demo import DemoBYOL, DemoClassifier, DemoSimCLR

PROBE_FILE = "gpu_check_probe_rank{rank}.json"
MIB = 1024 * 1024


def compiled_networks(module: nn.Module) -> list[str]:
    """Children that ``innerssl.compile.compile_networks`` compiled (``nn.Module.compile`` sets this attribute)."""
    return [name for name, child in module.named_children() if getattr(child, "_compiled_call_impl", None) is not None]


def channels_last_weights(module: nn.Module) -> bool | None:
    """Whether the first 4-D convolution weight is stored channels_last (None: the module has none)."""
    for parameter in module.parameters():
        if parameter.dim() == 4 and parameter.shape[1] > 1:  # 1-channel weights are both layouts at once
            return parameter.is_contiguous(memory_format=torch.channels_last)
    return None


def gradient_scale(trainer: pl.Trainer) -> float | None:
    """The loss scale of the 16-mixed gradient scaler; None when the run has none (32, bf16-mixed)."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return None if scaler is None else float(scaler.get_scale())


class RunProbe(pl.Callback):
    """Writes what the finished training ran with to ``<run folder>/gpu_check_probe_rank<R>.json``."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        losses = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if "loss" in name and torch.is_tensor(value) and value.numel() == 1
        }
        layers = list(pl_module.modules())
        record: dict[str, Any] = {
            "strategy": type(trainer.strategy).__name__,
            "world_size": trainer.world_size,
            "global_rank": trainer.global_rank,
            "process_group_backend": dist.get_backend() if dist.is_available() and dist.is_initialized() else None,
            "sync_batchnorm_layers": sum(isinstance(layer, nn.SyncBatchNorm) for layer in layers),
            "plain_batchnorm_layers": sum(
                isinstance(layer, _BatchNorm) and not isinstance(layer, nn.SyncBatchNorm) for layer in layers
            ),
            "compiled_networks": compiled_networks(pl_module),
            "channels_last_weights": channels_last_weights(pl_module),
            "precision": str(trainer.precision),
            "gradient_scale": gradient_scale(trainer),
            "global_step": trainer.global_step,
            "losses": losses,
            "losses_finite": bool(losses) and all(math.isfinite(value) for value in losses.values()),
            "device": str(pl_module.device),
            "peak_gpu_memory_mib": torch.cuda.max_memory_allocated() / MIB if torch.cuda.is_available() else None,
        }
        path = Path(trainer.default_root_dir) / PROBE_FILE.format(rank=trainer.global_rank)
        path.write_text(json.dumps(record, indent=2))


class _WithRunProbe:
    """Adds :class:`RunProbe` to a container's callbacks, changing nothing else."""

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        return [*super().create_callbacks(datamodule), RunProbe()]  # type: ignore[misc]


class GpuCheckBYOL(_WithRunProbe, DemoBYOL):
    """DemoBYOL, recording what its training ran with."""


class GpuCheckSimCLR(_WithRunProbe, DemoSimCLR):
    """DemoSimCLR, recording what its training ran with."""


class GpuCheckClassifier(_WithRunProbe, DemoClassifier):
    """DemoClassifier, recording what its training ran with."""
