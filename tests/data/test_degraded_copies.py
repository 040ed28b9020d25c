"""Stored degraded copies: written once, reused while valid, made again when sources or settings change."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from innerssl.augment.crappify import down_up_sample
from innerssl.data.biapy_layout import BiaPyLayout
from innerssl.data.degraded_copies import MANIFEST_NAME, degrade_image, degraded_copies
from innerssl.data.normalisation import Normalisation
from innerssl.data.patch_datamodule import LoadedImage, load_split
from innerssl.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NUCLEI_2D = SHARED_DATA / "microscopy-sample" / "nuclei-2d"
NORMALISATION = Normalisation("div")


def synthetic_layout(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        path = root / "train" / "x" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rng.integers(0, 255, (32, 40), dtype=np.uint8))
    return root


def load(root: Path) -> list[LoadedImage]:
    return load_split(BiaPyLayout.find(root, 2, val_fraction=0), "train", NORMALISATION, "none")


def mtimes(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.glob("*.npy")}


def test_copies_are_written_once_and_reused(tmp_path: Path) -> None:
    images = load(synthetic_layout(tmp_path / "data"))
    folder = tmp_path / "cache" / "data_ssl_source" / "train"
    copies = degraded_copies(images, folder, noise=0.2, resizing_factor=4, seed=0, settings_key="div")
    assert [copy.shape for copy in copies] == [item.image.shape for item in images]
    assert sorted(mtimes(folder)) == ["a.npy", "b.npy", "c.npy"]
    manifest = json.loads((folder / MANIFEST_NAME).read_text())
    assert manifest["settings"] == {"noise": 0.2, "resizing_factor": 4, "seed": 0, "key": "div"}
    assert set(manifest["images"]) == {"a", "b", "c"} and {"source", "size", "mtime_ns"} <= set(manifest["images"]["a"])
    before = mtimes(folder)
    again = degraded_copies(images, folder, noise=0.2, resizing_factor=4, seed=0, settings_key="div")
    assert mtimes(folder) == before
    assert all(torch.equal(a, b) for a, b in zip(copies, again))
    assert not list(folder.glob("*.tmp"))  # atomic writes leave nothing behind
    # The same settings give the same copies from scratch.
    shutil.rmtree(folder)
    fresh = degraded_copies(images, folder, noise=0.2, resizing_factor=4, seed=0, settings_key="div")
    assert all(torch.equal(a, b) for a, b in zip(copies, fresh))


def test_changed_source_remakes_its_copy_only(tmp_path: Path) -> None:
    root = synthetic_layout(tmp_path / "data")
    folder = tmp_path / "copies"
    images = load(root)
    old = degraded_copies(images, folder, 0.2, 4, 0, "div")
    before = mtimes(folder)
    source = root / "train" / "x" / "b.tif"
    tifffile.imwrite(source, np.full((32, 40), 200, dtype=np.uint8))
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # a later mtime for sure
    new = degraded_copies(load(root), folder, 0.2, 4, 0, "div")
    after = mtimes(folder)
    assert after["b.npy"] != before["b.npy"] and not torch.equal(new[1], old[1])
    assert after["a.npy"] == before["a.npy"] and after["c.npy"] == before["c.npy"]
    assert torch.equal(new[0], old[0])


def test_changed_settings_remake_every_copy(tmp_path: Path) -> None:
    images = load(synthetic_layout(tmp_path / "data"))
    folder = tmp_path / "copies"
    degraded_copies(images, folder, 0.2, 4, 0, "div")
    for change in ({"noise": 0.1}, {"resizing_factor": 2}, {"seed": 1}, {"settings_key": "percentile"}):
        before = mtimes(folder)
        settings = {"noise": 0.2, "resizing_factor": 4, "seed": 0, "settings_key": "div"} | change
        degraded_copies(images, folder, **settings)  # type: ignore[arg-type]
        after = mtimes(folder)
        assert all(after[name] != before[name] for name in before), change
        degraded_copies(images, folder, 0.2, 4, 0, "div")  # back to the first settings


def test_statistics_of_the_copies(tmp_path: Path) -> None:
    if not NUCLEI_2D.is_dir():
        pytest.skip(f"real sample data {NUCLEI_2D} is absent (../shared/data beside the checkout)")
    layout = BiaPyLayout.find(NUCLEI_2D, 2, val_fraction=0)
    images = load_split(layout, "train", Normalisation("percentile"), "none")
    noisy = degraded_copies(images, tmp_path / "noisy", 0.2, 4, 0, "percentile")
    clean = degraded_copies(images, tmp_path / "clean", 0.0, 4, 0, "percentile")
    for item, copy, smooth in zip(images, noisy, clean):
        assert copy.dtype == torch.float32 and not torch.allclose(copy, item.image, atol=0.05)
        assert float(copy.min()) >= 0 and float(copy.max()) <= float(item.image.max()) + 1e-6
        torch.testing.assert_close(smooth, down_up_sample(item.image[None], 4)[0], atol=1e-6, rtol=0)
        noise = (copy - smooth).std()
        assert 0.02 < float(noise) < 0.2  # noise of std 0.2 x max, then averaged by the resampling
    same = images[0].image  # one seed per image name, not one noise pattern for all
    assert not torch.equal(degrade_image(same, 0.2, 4, 0, "a"), degrade_image(same, 0.2, 4, 0, "b"))


def test_negative_images_stay_in_their_range() -> None:
    image = Normalisation("zero_mean_unit_variance")(torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(0)))
    copy = degrade_image(image, 0.3, 4, 0, "z")
    assert float(image.min()) < 0 and float(copy.min()) >= float(image.min()) - 1e-6
    assert float(copy.max()) <= float(image.max()) + 1e-6 and float(copy.min()) < 0
    with pytest.raises(UserError, match="--crappify_resizing_factor"):
        degrade_image(image, 0.3, 3, 0, "z")
