"""Checkpoint files that a kill cannot destroy: write a temporary file beside the target, make it durable, rename.

A ResNet-50 checkpoint with optimizer state is hundreds of MB, and on network storage writing it takes seconds;
a process killed (preempted, out of memory, Ctrl-C twice) during the write must leave the previous checkpoint
intact. ``os.replace`` within one folder is atomic on POSIX and Windows file systems, so readers see either
the old file or the complete new one, and ``fsync`` of the file (and of its folder) before and after the
rename makes that hold across a power loss too. The checkpoint is streamed into the file rather than into
a memory buffer first, so saving needs no second copy of it in RAM.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import IO, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = "."
TEMPORARY_SUFFIX = ".partial"


def temporary_path(target: Path) -> Path:
    """Where ``target`` is written before it is renamed into place (same folder: the rename is atomic)."""
    return target.with_name(f"{TEMPORARY_PREFIX}{target.name}.{os.getpid()}{TEMPORARY_SUFFIX}")


def serialize(checkpoint: dict[str, Any], file: IO[bytes]) -> None:
    """Write ``checkpoint`` into an open file (a seam: tests slow it down to kill a run mid-write)."""
    torch.save(checkpoint, file)


def fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    with contextlib.suppress(OSError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def remove_stale_temporaries(target: Path) -> None:
    """Delete half-written temporaries of ``target`` that a killed process left behind."""
    pattern = f"{TEMPORARY_PREFIX}{target.name}.*{TEMPORARY_SUFFIX}"
    for stale in target.parent.glob(pattern):
        with contextlib.suppress(OSError):
            stale.unlink()
            logger.info("Removed %s, left by a process killed while writing a checkpoint", stale.name)


def save_durably(checkpoint: dict[str, Any], target: Path | str) -> None:
    """Write ``checkpoint`` to ``target`` so that ``target`` always holds a complete checkpoint (old or new)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    partial = temporary_path(target)
    try:
        with open(partial, "wb") as file:
            serialize(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    fsync_folder(target.parent)


class DurableCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint I/O with :func:`save_durably` for every checkpoint the trainer writes (last and
    best alike); loading is Lightning's own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        save_durably(checkpoint, Path(path))
