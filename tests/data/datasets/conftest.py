"""Fixtures the dataset tests share: the real NIH sample, dataset options, tiny image writers."""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageFileDataset

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
NIH_SAMPLE = SHARED_DATA / "nih-sample"


@pytest.fixture
def nih_sample() -> Path:
    """The 216 original NIH ChestX-ray14 images and their label file (skips where absent)."""
    if not (NIH_SAMPLE / "Data_Entry_2017.csv").is_file():
        pytest.skip(f"shared NIH sample not found at {NIH_SAMPLE} (it lies beside the checkout in CI)")
    return NIH_SAMPLE


@pytest.fixture
def make_options(tmp_path: Path) -> Callable[..., DatasetOptions]:
    """DatasetOptions with a bad-file log in tmp_path; keyword arguments override fields."""

    def make(**overrides: object) -> DatasetOptions:
        return DatasetOptions(**{"bad_file_log": tmp_path / "bad_files.txt", **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """Write a small grayscale image (deterministic pixels) at a path, creating its folder."""

    def write(path: Path, size: int = 16, value: int | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(path.name.encode()))
        pixels = np.full((size, size), value, np.uint8) if value is not None else rng.integers(0, 256, (size, size))
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        return path

    return write


def all_records(splits: DatasetSplits) -> dict[str, ImageFileDataset]:
    return {name: getattr(splits, name) for name in ("train", "val", "test") if getattr(splits, name) is not None}


@pytest.fixture
def split_datasets() -> Callable[[DatasetSplits], dict[str, ImageFileDataset]]:
    """The non-empty split datasets of a DatasetSplits by name."""
    return all_records


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
