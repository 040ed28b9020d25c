"""Weight transfer by name and shape, e.g. a pretrained encoder into a segmentation network's encoder.

:func:`transfer_weights` copies every source tensor whose name (after the prefixes are stripped) and shape match
a target tensor, parameters and buffers alike (BatchNorm statistics), and says what it did in a
:class:`TransferReport`. A transfer that loads nothing raises: silently training from scratch when the user
asked for pretrained weights is the worst outcome (BiaPy issue #165).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from innerssl.errors import UserError

STALE_CROSS_ATTENTION = ".cross_attn."
"""MONAI < 1.4 always built cross-attention in its TransformerBlock; old checkpoints carry these unused weights."""
LISTED_NAMES = 20


def _names(keys: Sequence[str], limit: int = LISTED_NAMES) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown} and {len(keys) - limit} more" if len(keys) > limit else shown


@dataclass
class TransferReport:
    """What a transfer did; keys are the target's full keys except ``unused`` (the source's)."""

    loaded: list[str] = field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    """(target key, source shape, target shape): same name, other shape, e.g. an output layer of other channels."""
    missing: list[str] = field(default_factory=list)
    """Considered target keys the source lacks; they keep their initial values."""
    unused: list[str] = field(default_factory=list)
    """Source keys (with the source prefix) whose name no considered target key has; a name found with another
    shape is reported once, in ``shape_mismatch``."""

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} tensors loaded, {len(self.shape_mismatch)} skipped for their shape, "
            f"{len(self.missing)} missing from the source, {len(self.unused)} source tensors unused"
        )

    def log(self, logger: logging.Logger, what: str) -> None:
        """The summary, then the names of what did not load (at most ~20 of each)."""
        logger.info("%s: %s", what, self.summary())
        if self.shape_mismatch:
            described = [f"{key} {tuple(source)}->{tuple(target)}" for key, source, target in self.shape_mismatch]
            logger.warning("%s: kept initial values for other shapes: %s", what, _names(described))
        if self.missing:
            logger.warning("%s: kept initial values, not in the source: %s", what, _names(self.missing))
        stale = [key for key in self.unused if STALE_CROSS_ATTENTION in key]
        unused = [key for key in self.unused if STALE_CROSS_ATTENTION not in key]
        if unused:
            logger.info("%s: source tensors not used: %s", what, _names(unused))
        if stale:
            logger.debug("%s: ignored %d stale cross-attention tensors of an old MONAI checkpoint", what, len(stale))


def transfer_weights(
    target: nn.Module,
    source_state: Mapping[str, Tensor],
    source_prefix: str = "",
    target_prefix: str = "",
    only_keys: Callable[[str], bool] | None = None,
    strict: bool = False,
) -> TransferReport:
    """Copy matching source tensors into ``target`` in place and report what happened.

    A source key counts only with ``source_prefix`` (stripped; others are ignored, not reported) and a target key
    only with ``target_prefix`` (stripped) and, if given, ``only_keys(full target key)`` true (e.g.
    :func:`innerssl.networks.dense.is_encoder_key` to fill an encoder only). Names then match exactly and shapes
    must agree. ``strict``: a shape mismatch or a considered target key missing from the source raises. Stale
    ``.cross_attn.`` source keys (old MONAI checkpoints) are only ever unused.
    """
    target_state = target.state_dict()
    considered: dict[str, str] = {}  # stripped name -> full target key
    for key in target_state:
        if key.startswith(target_prefix) and (only_keys is None or only_keys(key)):
            considered[key[len(target_prefix) :]] = key
    source: dict[str, str] = {}  # stripped name -> full source key
    for key in source_state:
        if key.startswith(source_prefix):
            source[key[len(source_prefix) :]] = key

    report = TransferReport()
    copies: list[tuple[Tensor, Tensor]] = []
    for name, target_key in considered.items():
        source_key = source.get(name)
        if source_key is None:
            report.missing.append(target_key)
            continue
        value, destination = source_state[source_key], target_state[target_key]
        if tuple(value.shape) != tuple(destination.shape):
            report.shape_mismatch.append((target_key, tuple(value.shape), tuple(destination.shape)))
            continue
        copies.append((destination, value))
        report.loaded.append(target_key)
    taken = {name for name in considered if name in source}
    report.unused = [key for name, key in source.items() if name not in taken]

    if not report.loaded:
        target_examples = _names(list(considered.values()), 3) or "none"
        raise UserError(
            f"None of the {len(source)} weights of the checkpoint (keys under '{source_prefix}') match the network "
            f"(keys under '{target_prefix}', e.g. {target_examples}): is it the same architecture? Check the "
            f"checkpoint's keys (e.g. {_names(list(source.values()), 3) or 'none'}) and the prefixes"
        )
    if strict and (report.shape_mismatch or report.missing):
        problems = [
            f"{key} {source_shape}->{target_shape}" for key, source_shape, target_shape in report.shape_mismatch
        ]
        problems += [f"{key} (missing)" for key in report.missing]
        raise UserError(
            f"The checkpoint does not fit the network exactly: {_names(problems, 5)}; "
            "drop --strict_weights to load what matches and keep the rest as initialised"
        )
    with torch.no_grad():
        for destination, value in copies:
            destination.copy_(value)
    return report


__all__ = ["STALE_CROSS_ATTENTION", "TransferReport", "transfer_weights"]
