"""Checkpoint writes that a kill cannot destroy: the old file stays complete until the new one replaces it."""

import os

import pytest
import torch

import innerssl.outputs.durable_io as durable_io
from innerssl.outputs.durable_io import DurableCheckpointIO, save_durably, temporary_path


def test_a_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    save_durably({"step": 1}, target)
    save_durably({"step": 2}, target)
    assert torch.load(target, weights_only=True) == {"step": 2}
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]


def test_a_failing_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    save_durably({"step": 1, "weights": torch.ones(1000)}, target)

    def write_half_then_die(checkpoint, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt  # what a kill looks like from inside, where it can be seen at all

    monkeypatch.setattr(durable_io, "serialize", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        save_durably({"step": 2}, target)
    assert torch.load(target, weights_only=True)["step"] == 1
    assert not temporary_path(target).exists()


def test_temporaries_of_killed_processes_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.ckpt"
    stale = target.with_name(f".last.ckpt.{os.getpid() + 1}.partial")
    stale.write_bytes(b"left by a SIGKILL")
    unrelated = tmp_path / "best.ckpt"
    unrelated.write_bytes(b"x")
    DurableCheckpointIO().save_checkpoint({"step": 3}, target)
    assert not stale.exists() and unrelated.exists()
    assert torch.load(target, weights_only=True) == {"step": 3}
