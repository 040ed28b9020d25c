"""Shared test helpers: tiny, fast settings for end-to-end runs on the CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def tiny_demo_flags(tmp_path: Path, **overrides: object) -> list[str]:
    """Flags that make a demo run take seconds: 32 px images, a few batches, small heads."""
    flags = {
        "output_dir": tmp_path / "outputs",
        "dataset_cache_dir": tmp_path / "cache",
        "demo_num_images": 96,
        "demo_image_size": 32,
        "ssl_training_batch_size": 16,
        "linear_head_batch_size": 16,
        "projection_hidden_dim": 32,
        "projection_dim": 16,
        "num_epochs": 2,
        "warmup_epochs": 0,
        "num_workers": 0,
        "max_num_gpus": 0,
        "run_name": "test",
    }
    flags.update(overrides)
    return [f"--{name}={value}" for name, value in flags.items()]


SSL_ONLY_FLAGS = ("ssl_training_batch_size", "projection_hidden_dim", "projection_dim")
"""Tiny settings of SSL runs that a classifier does not have (it has no SSL method)."""


def tiny_classifier_flags(tmp_path: Path, **overrides: object) -> list[str]:
    """``tiny_demo_flags`` for a classifier run: without the SSL method's settings."""
    return [flag for flag in tiny_demo_flags(tmp_path, **overrides) if flag[2:].split("=")[0] not in SSL_ONLY_FLAGS]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)")
    return SHARED_DATA
