"""DemoSimCLR whose last.ckpt writes after the first take seconds, for a test that kills a run during a write.

Loaded in the run's own process through ``--config_module``: where ``$INNERSSL_TEST_WRITE_MARKER`` is set, it
replaces the checkpoint writer's serialisation with one that writes half the checkpoint, touches that file and
waits before the rest.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import IO, Any

import torch

import innerssl.outputs.durable_io as durable_io
from configs.demo import DemoSimCLR

PAUSE_S = 60.0
_writes = {"last": 0}


def slow_serialize(checkpoint: dict[str, Any], file: IO[bytes]) -> None:
    marker = os.environ.get("INNERSSL_TEST_WRITE_MARKER")
    if marker is None or not Path(file.name).name.startswith(".last.ckpt"):
        torch.save(checkpoint, file)
        return
    _writes["last"] += 1
    if _writes["last"] == 1:  # the first epoch's checkpoint is written at full speed
        torch.save(checkpoint, file)
        return
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    file.write(data[: len(data) // 2])
    file.flush()
    Path(marker).touch()
    time.sleep(PAUSE_S)
    file.write(data[len(data) // 2 :])


durable_io.serialize = slow_serialize


class SlowWriteSimCLR(DemoSimCLR):
    """DemoSimCLR; the module import above slows its checkpoint writes."""
