"""The registry of restoration pretext tasks and the interface every task implements.

A task says how an image is degraded, what the network is asked to recover and which pixels count, both for the
training patches (:meth:`PretextTask.training_pair`) and for whole validation / test images
(:meth:`PretextTask.restore`, which also returns the *baseline*: what a network that learned nothing would give,
the degraded input or the mean-filled masked image). Like SSL methods, a task's own parameters are the keyword
arguments of its ``__init__`` (flags ``--<flag_prefix>_<argument>``, documented in ``parameter_docs``), so a
container carries only the chosen task's flags; users register theirs with ``@register_task`` in a
``--config_module``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from innerssl.errors import UserError
from innerssl.registry import Registry

TileFunction = Callable[[Tensor, Callable[[Tensor], Tensor]], Tensor]
"""Whole-image inference by tiles: ``(image (C, *spatial), network on (B, C, *patch)) -> (C_out, *spatial)``."""


@dataclass(frozen=True)
class Restoration:
    """One whole image restored: the original, what the network saw, what it returned, the do-nothing baseline,
    and the pixels the metrics count (None: all)."""

    original: Tensor
    network_input: Tensor
    restored: Tensor
    baseline: Tensor
    mask: Tensor | None = None
    """``(1, *spatial)`` bool, True where the metrics count (masking: the masked patches)."""
    reconstruction: Tensor | None = None
    """Masking: the network's output everywhere (``restored`` keeps the visible pixels of the original)."""


class PretextTask:
    """A restoration pretext task. Subclasses set the class attributes and implement the two methods."""

    task_name: ClassVar[str] = ""
    """The registry name (``--pretext_task``)."""
    flag_prefix: ClassVar[str] = ""
    parameter_docs: ClassVar[dict[str, str]] = {}
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    default_network: ClassVar[str] = "unet"
    """The dense network (innerssl.networks.dense) the task trains unless --network says otherwise."""
    token_networks: ClassVar[bool] = False
    """Whether the task needs a masked-autoencoder ViT (``forward(x, mask)``) rather than a plain dense network."""
    baseline_name: ClassVar[str] = "input"
    input_heading: ClassVar[str] = "network input"
    """What the network sees, as a picture's column heading (slices/ pictures)."""
    """How result tables name the baseline (``input_psnr``, ``mean_fill_psnr``)."""
    needs_unit_range: ClassVar[bool] = False
    """Whether the degradation assumes intensities in [0, max] (not zero mean / unit variance)."""

    def __init__(self) -> None:
        pass

    def arguments(self) -> dict[str, Any]:
        """The task's own ``__init__`` arguments, as recorded in checkpoints."""
        from innerssl.ssl.parameters import own_arguments

        return {name: getattr(self, name) for name, _parameter, _owner in own_arguments(type(self), PretextTask)}

    def check(self, normalisation: str, network_name: str, token_network: bool) -> None:
        """Refuse settings the task cannot train on, with a one-line error naming the flag."""
        if self.token_networks and not token_network:
            raise UserError(
                f"--pretext_task={self.task_name} trains a masked-autoencoder ViT: use --network=vit_mae, not "
                f"{network_name}"
            )
        if not self.token_networks and token_network:
            raise UserError(
                f"--network={network_name} is a masked-autoencoder ViT, which only --pretext_task=masking trains: "
                "choose a U-Net (e.g. --network=unet)"
            )
        if self.needs_unit_range and normalisation == "zero_mean_unit_variance":
            raise UserError(
                f"--pretext_task={self.task_name} degrades intensities in [0, max]: use --normalisation=div or "
                "percentile, not zero_mean_unit_variance"
            )

    def prepare_network(self, network: nn.Module) -> None:
        """Adjust a freshly built network to the task (e.g. zero the output layer of a residual restoration)."""

    def training_pair(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """(prediction, target, mask or None) of a batch of training patches ``(N, C, *patch)``; ``targets`` are
        the originals where the data holds stored degraded copies (then ``images`` are those copies)."""
        raise NotImplementedError

    def preview_inputs(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(what the network is given, what it must recover) for a batch of training patches, as pictures for
        the aug/ previews."""
        raise NotImplementedError

    def objective(self, prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        """The training loss of a batch (``mask``: the pixels that count, None for all)."""
        raise NotImplementedError

    def training_loss(self, network: nn.Module, images: Tensor, targets: Tensor | None) -> Tensor:
        """The loss of one training batch: ``objective`` of ``training_pair``; tasks whose loss needs more than one
        prediction per image (two augmented views) override this."""
        prediction, target, mask = self.training_pair(network, images, targets)
        return self.objective(prediction, target, mask)

    def restore(
        self, network: nn.Module, image: Tensor, target: Tensor | None, index: int, tiles: TileFunction
    ) -> Restoration:
        """Restore one whole image ``(C, *spatial)``; the degradation of image ``index`` is the same every time it
        is evaluated (seeded by the index), so validation metrics compare across epochs."""
        raise NotImplementedError


def _import_task_modules() -> None:
    import innerssl.restoration as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("registry", "module", "callbacks", "losses"):
            importlib.import_module(f"{package.__name__}.{module.name}")


PRETEXT_TASKS: Registry[type[PretextTask]] = Registry("restoration pretext task", populate=_import_task_modules)


def pretext_task(name: str) -> type[PretextTask]:
    return PRETEXT_TASKS.get(name)


def register_task(task: type[PretextTask]) -> type[PretextTask]:
    """Class decorator: register ``task`` under its ``task_name``."""
    if not task.task_name:
        raise ValueError(f"{task.__name__} needs a task_name to be registered")
    return PRETEXT_TASKS.register(task.task_name)(task)


def seeded_generator(index: int, device: torch.device, base_seed: int = 1234) -> torch.Generator:
    """The generator of image ``index``'s evaluation degradation: the same image is degraded the same way at
    every validation and at the test."""
    generator = torch.Generator(device=device)
    generator.manual_seed(base_seed * 1_000_003 + index)
    return generator


def build_task(name: str, arguments: Mapping[str, Any]) -> PretextTask:
    return pretext_task(name)(**dict(arguments))
