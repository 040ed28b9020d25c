"""The linear probe under DDP (2 gloo processes on the CPU): every image embedded once across the processes, the
same head on both, and the head a single process fits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from innerssl.outputs.checkpoints import load_checkpoint
from tests.conftest import REPO_ROOT, tiny_classifier_flags

RUN_TIMEOUT_S = 240


def run_classifier(tmp_path: Path, processes: int) -> Path:
    flags = tiny_classifier_flags(tmp_path, output_dir=tmp_path / f"outputs{processes}", num_cpu_processes=processes)
    command = [sys.executable, str(REPO_ROOT / "runner.py"), "--model=DemoClassifier", *flags]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # several processes on a small CPU: no intra-op threads
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fits = [line for line in (result.stdout + result.stderr).splitlines() if "Linear probe on" in line]
    assert len(fits) == processes, fits  # every process fitted ...
    assert all("Linear probe on 76 training embeddings" in line for line in fits)  # ... all 76 images, once each
    return tmp_path / f"outputs{processes}" / "DemoClassifier" / "test" / "checkpoints" / "best.ckpt"


def test_two_processes_fit_the_head_one_process_fits(tmp_path):
    one = load_checkpoint(run_classifier(tmp_path, 1))["state_dict"]
    two = load_checkpoint(run_classifier(tmp_path, 2))["state_dict"]
    for name in ("head.1.weight", "head.1.bias"):
        # Gathered in another order, summed in another order: equal up to the solver's tolerance.
        torch.testing.assert_close(two[name], one[name], atol=1e-4, rtol=1e-3)
    assert torch.equal(two["encoder.network.conv1.weight"], one["encoder.network.conv1.weight"])
