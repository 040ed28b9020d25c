"""A run killed mid-epoch (SIGKILL, no clean-up) resumes from last.ckpt and finishes every epoch once."""

import os
import signal
import subprocess
import sys
import time

import pandas as pd

from innerssl.outputs.checkpoints import load_checkpoint
from tests.conftest import REPO_ROOT, tiny_demo_flags

TIMEOUT_S = 600


def test_killed_run_resumes(tmp_path):
    flags = tiny_demo_flags(tmp_path, num_epochs=3, demo_num_images=200)
    command = [sys.executable, str(REPO_ROOT / "runner.py"), "--model=DemoSimCLR", *flags]
    run = tmp_path / "outputs" / "DemoSimCLR" / "test"
    last = run / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), "the run never wrote last.ckpt"
        time.sleep(0.5)  # into the next epoch
        assert process.poll() is None, "the run finished before it could be killed; make it longer"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = load_checkpoint(last)["global_step"]
    assert killed_at > 0

    resumed = subprocess.run([*command, "--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1, 2]
    final = load_checkpoint(last)
    steps_per_epoch = metrics["step"].iloc[0]
    assert final["global_step"] == 3 * steps_per_epoch
