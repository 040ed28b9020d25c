"""The cost of writing last.ckpt durably (temporary file, fsync, rename) against Lightning's own write.

Builds the checkpoint of a BYOL ResNet-50 (``NIH_RSNA_BYOL``'s network: online and target encoders, projectors,
predictor) with AdamW state after one step, and times writing it into ``--folder`` (default: a temporary
folder; point it at the storage your runs write to, e.g. a network mount) with:

(a) Lightning's ``TorchCheckpointIO`` (the baseline: ``torch.save`` into memory, then one write, no fsync),
(b) innerssl's ``DurableCheckpointIO`` (streamed into a temporary file beside the target, flush + fsync,
    atomic rename over the target, fsync of the folder),

each over an existing file (as every epoch after the first does). Prints the checkpoint size, the median and
minimum seconds per write over ``--repeats``, and the ratio (b) / (a).

Example::

    python benchmarks/checkpoint_write.py --repeats 5 --folder /mnt/shared/outputs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from innerssl.outputs.durable_io import DurableCheckpointIO
from innerssl.ssl.byol import BYOL


def byol_resnet50_checkpoint(encoder: str) -> dict[str, Any]:
    """A checkpoint dict shaped like Lightning's: weights, optimizer state with Adam moments, loop counters."""
    module = BYOL(encoder_name=encoder, in_channels=1, projection_hidden_dim=4096, projection_dim=256)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    for parameter in module.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()  # creates exp_avg and exp_avg_sq for every parameter
    return {
        "epoch": 1,
        "global_step": 100,
        "state_dict": module.state_dict(),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
    }


def time_writes(write: Callable[[], None], repeats: int) -> list[float]:
    write()  # the target exists from here on, as after the first epoch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        write()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temporary folder)")
    parser.add_argument("--encoder", default="resnet50")
    args = parser.parse_args()

    checkpoint = byol_resnet50_checkpoint(args.encoder)
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        folder = Path(scratch)
        baseline_path, durable_path = folder / "lightning.ckpt", folder / "last.ckpt"
        baseline_io, durable_io = TorchCheckpointIO(), DurableCheckpointIO()
        results = {
            "Lightning TorchCheckpointIO (baseline)": time_writes(
                lambda: baseline_io.save_checkpoint(checkpoint, baseline_path), args.repeats
            ),
            "innerssl DurableCheckpointIO": time_writes(
                lambda: durable_io.save_checkpoint(checkpoint, durable_path), args.repeats
            ),
        }
        size_mb = durable_path.stat().st_size / 1e6
        assert abs(baseline_path.stat().st_size / 1e6 - size_mb) < 1, "both writes must hold the same checkpoint"

    print(f"BYOL {args.encoder} checkpoint with AdamW state: {size_mb:.0f} MB, {args.repeats} writes each")
    print(f"{'writer':<40} {'median s':>9} {'min s':>7} {'MB/s':>7}")
    medians = {}
    for name, times in results.items():
        medians[name] = statistics.median(times)
        print(f"{name:<40} {medians[name]:>9.3f} {min(times):>7.3f} {size_mb / medians[name]:>7.0f}")
    baseline, durable = medians.values()
    print(f"ratio durable / baseline (median): {durable / baseline:.2f}")


if __name__ == "__main__":
    main()
