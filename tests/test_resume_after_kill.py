"""Runs killed with SIGKILL (no clean-up, as a preemption or the OOM killer does) resume from checkpoints/last.ckpt.

- a demo configuration as shipped (DemoBYOL: the demo data, batch size and loaders; a momentum target too), killed
  at a random point of epoch 3 of 4: exactly that epoch is repeated;
- a kill during a (slowed) checkpoint write: the previous epoch's file is intact and the run resumes from it;
- the timed checkpoint (--checkpoint_every_n_minutes): a run killed mid-epoch resumes mid-epoch.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.outputs.durable_io import TEMPORARY_SUFFIX
from tests.conftest import REPO_ROOT, tiny_classifier_flags, tiny_demo_flags

TIMEOUT_S = 900
RUNNER = str(REPO_ROOT / "runner.py")


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT, env=env)


def wait_for(condition: Callable[[], bool], process: subprocess.Popen, what: str, log: Path) -> float:
    """Poll ``condition`` until it holds; returns the time it did. Fails if the run ends or takes too long."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        if process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"timed out waiting for {what}")


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def metrics_rows(run: Path) -> int:
    try:
        return len(pd.read_csv(run / "metrics.csv"))
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0


def position(checkpoint: Path) -> dict[str, int]:
    """Where training continues from this checkpoint (recorded by innerssl's LastCheckpoint callback)."""
    state = load_checkpoint(checkpoint)
    (datamodule,) = (value for key, value in state.items() if key.endswith("DataModule"))
    return {**datamodule["position"], "global_step": state["global_step"]}


def resume(command: list[str], log: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [*command, "--resume"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, env=env
    )
    log.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout + result.stderr


def test_readme_demo_killed_in_epoch_3_of_4_repeats_exactly_that_epoch(tmp_path):
    # A shipped demo config as a user runs it (python runner.py --model=DemoBYOL: its images, batch size, 2 loader
    # workers; BYOL also has a momentum target to restore), 4 epochs; 640 of the demo's 1,600 images (8 steps an
    # epoch instead of 20) keep CI short.
    command = [
        sys.executable,
        RUNNER,
        "--model=DemoBYOL",
        "--num_epochs=4",
        "--demo_num_images=640",
        "--run_name=r1",
        f"--output_dir={tmp_path / 'outputs'}",
        f"--dataset_cache_dir={tmp_path / 'cache'}",
    ]
    run = tmp_path / "outputs" / "DemoBYOL" / "r1"
    last = run / "checkpoints" / "last.ckpt"
    seed = int(os.environ.get("INNERSSL_KILL_SEED", time.time_ns() % 10_000))
    fraction = random.Random(seed).uniform(0.1, 0.8)
    process = start(command, tmp_path / "killed.log")
    try:
        epoch_0_end = wait_for(lambda: metrics_rows(run) >= 1, process, "epoch 0 ended", tmp_path / "killed.log")
        epoch_1_end = wait_for(lambda: metrics_rows(run) >= 2, process, "epoch 1 ended", tmp_path / "killed.log")
        wait_for(
            lambda: last.is_file() and position(last)["epoch"] == 2,
            process,
            "epoch 1's last.ckpt",
            tmp_path / "killed.log",
        )
        time.sleep(max(0.0, epoch_1_end + fraction * (epoch_1_end - epoch_0_end) - time.monotonic()))
        assert metrics_rows(run) == 2, f"epoch 2 ended before the kill (seed {seed}); the kill must land inside it"
        before = pd.read_csv(run / "metrics.csv")
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert metrics_rows(run) == 2, f"epoch 2 ended before the kill took effect (seed {seed})"
    steps_per_epoch = int(before["step"].iloc[0])
    assert position(last) == {"epoch": 2, "batches_done": 0, "world_size": 1, "global_step": 2 * steps_per_epoch}

    output = resume(command, tmp_path / "resumed.log")
    assert "Resuming from" in output
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1, 2, 3], f"seed {seed}"
    pd.testing.assert_frame_equal(metrics.iloc[:2], before)  # what was done before the kill is kept as it was
    assert list(metrics["step"]) == [steps_per_epoch * (epoch + 1) for epoch in range(4)]
    assert load_checkpoint(last)["global_step"] == 4 * steps_per_epoch
    assert metrics[["ssl/train_loss", "linear_head/val_auroc"]].notna().all().all()


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    command = [
        sys.executable,
        RUNNER,
        "--model=SlowWriteSimCLR",
        f"--config_module={REPO_ROOT / 'tests' / 'slow_checkpoint_config.py'}",
        *tiny_demo_flags(tmp_path, num_epochs=3),
    ]
    run = tmp_path / "outputs" / "SlowWriteSimCLR" / "test"
    last = run / "checkpoints" / "last.ckpt"
    marker = tmp_path / "writing"
    env = {**os.environ, "INNERSSL_TEST_WRITE_MARKER": str(marker)}
    process = start(command, tmp_path / "killed.log", env)
    try:
        wait_for(marker.exists, process, "the second last.ckpt write", tmp_path / "killed.log")
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    partial = list(last.parent.glob(f".last.ckpt.*{TEMPORARY_SUFFIX}"))
    assert len(partial) == 1, "the kill should have left a half-written temporary file"
    assert position(last)["epoch"] == 1  # epoch 0's checkpoint, complete and loadable
    steps_per_epoch = position(last)["global_step"]

    resume(command, tmp_path / "resumed.log")  # without the marker variable: writes at full speed
    assert not partial[0].exists()
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1, 2]
    assert load_checkpoint(last)["global_step"] == 3 * steps_per_epoch


def test_the_timed_checkpoint_resumes_mid_epoch(tmp_path):
    command = [
        sys.executable,
        RUNNER,
        "--model=DemoSimCLR",
        *tiny_demo_flags(tmp_path, demo_num_images=400, checkpoint_every_n_minutes=0.01),
    ]
    run = tmp_path / "outputs" / "DemoSimCLR" / "test"
    last = run / "checkpoints" / "last.ckpt"

    def mid_epoch_1_checkpoint() -> bool:
        if not last.is_file():
            return False
        where = position(last)
        return where["epoch"] == 1 and where["batches_done"] >= 3

    process = start(command, tmp_path / "killed.log")
    try:
        wait_for(mid_epoch_1_checkpoint, process, "a timed checkpoint in epoch 1", tmp_path / "killed.log")
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = position(last)
    steps_per_epoch = int(pd.read_csv(run / "metrics.csv")["step"].iloc[0])
    assert killed_at["global_step"] == steps_per_epoch + killed_at["batches_done"]
    assert 0 < killed_at["batches_done"] < steps_per_epoch
    assert "--checkpoint_every_n_minutes" in (tmp_path / "killed.log").read_text()

    resume(command, tmp_path / "resumed.log")
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    # The resumed process trained only the batches epoch 1 had left: the steps add up to two whole epochs.
    assert load_checkpoint(last)["global_step"] == 2 * steps_per_epoch
    assert list(metrics["step"]) == [steps_per_epoch, 2 * steps_per_epoch]


def test_a_killed_classifier_run_resumes(tmp_path):
    flags = tiny_classifier_flags(tmp_path, num_epochs=3, demo_num_images=400, freeze_encoder="false")
    command = [sys.executable, RUNNER, "--model=DemoClassifier", *flags]
    run = tmp_path / "outputs" / "DemoClassifier" / "test"
    last = run / "checkpoints" / "last.ckpt"
    process = start(command, tmp_path / "killed.log")
    try:
        wait_for(lambda: last.is_file(), process, "the first last.ckpt", tmp_path / "killed.log")
        kill(process)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = position(last)
    assert 1 <= killed_at["epoch"] < 3 and killed_at["batches_done"] == 0
    steps_per_epoch = killed_at["global_step"] // killed_at["epoch"]
    output = resume(command, tmp_path / "resumed.log")
    assert "Resuming from" in output and "Test:" in output  # the test stage runs after the resumed training
    assert list(pd.read_csv(run / "metrics.csv")["epoch"]) == [0, 1, 2]
    assert load_checkpoint(last)["global_step"] == 3 * steps_per_epoch
