"""BiaPy's dataset layout: splits, target matching, axis rules, dtypes and bad files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
import tifffile
from PIL import Image
from pydicom import examples

from innerssl.data.biapy_layout import BiaPyLayout, carve_validation, probe_image, read_image
from innerssl.data.datasets.base import BadFileLog, read_bad_file_log
from innerssl.errors import BadImageFile, UserError

NUCLEI = "microscopy-sample"


def ramp(shape: tuple[int, ...], dtype: type = np.uint16) -> np.ndarray:
    """Distinct values, so a transposed or mixed-up read cannot pass."""
    return (np.arange(int(np.prod(shape))) % 4000).astype(dtype).reshape(shape)


def write(path: Path, pixels: np.ndarray, **tiff_options: object) -> Path:
    """``pixels`` to ``path`` in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, pixels)
    elif path.suffix == ".png":
        Image.fromarray(pixels).save(path)
    elif path.name.endswith((".nii", ".nii.gz")):
        nibabel.save(nibabel.Nifti1Image(pixels, np.eye(4)), path)
    else:
        tifffile.imwrite(path, pixels, **tiff_options)
    return path


def gray_layout(root: Path, names: tuple[str, ...] = ("a", "b", "c"), split: str = "train", masks: bool = True) -> Path:
    for index, name in enumerate(names):
        write(root / split / "x" / f"{name}.tif", ramp((16, 20)) + index)
        if masks:
            write(root / split / "y" / f"{name}.tif", (ramp((16, 20)) > 2000).astype(np.uint8))
    return root


def nuclei(shared_data: Path, name: str) -> Path:
    root = shared_data / NUCLEI / name
    if not root.is_dir():
        pytest.skip(f"the BiaPy nuclei sample is not at {root}")
    return root


# --- the real sample ------------------------------------------------------------------------------------------


def test_nuclei_2d_splits_shapes_and_masks(shared_data: Path) -> None:
    root = nuclei(shared_data, "nuclei-2d")
    layout = BiaPyLayout.find(root, spatial_dims=2, val_fraction=0.34, seed=0)
    train, val, test = (layout.splits[split] for split in ("train", "val", "test"))
    assert layout.val_source == "carved"
    assert (len(train), len(val), len(test)) == (2, 1, 1)
    assert sorted(s.name for s in train + val) == ["nuclei-0", "nuclei-1", "nuclei-2"]
    assert [s.name for s in test] == ["nuclei-3"]
    assert layout.channels == 1 and layout.target_channels == 1 and not layout.bad_files
    for sample in train + val + test:
        assert sample.target_path == sample.image_path.parent.parent / "y" / sample.image_path.name
        image, info = read_image(sample.image_path, 2)
        mask, _ = read_image(sample.target_path, 2)
        assert image.shape == mask.shape == (1, 256, 256)
        assert image.dtype == np.uint16 and info.dtype_max == 65535 and info.axes == "YX"
        assert info == layout.infos[sample.image_path]  # the header probe predicts the read
        assert not np.array_equal(image, mask)
    assert layout.has_targets("train") and layout.has_targets("test")


def test_nuclei_3d_shapes_and_no_val_from_one_image(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = nuclei(shared_data, "nuclei-3d")
    with caplog.at_level(logging.WARNING, logger="innerssl.data.biapy_layout"):
        layout = BiaPyLayout.find(root, spatial_dims=3, val_fraction=0.5, seed=0)
    assert layout.val_source == "none" and layout.splits["val"] == []
    assert "no validation split" in caplog.text
    (train,), (test,) = layout.splits["train"], layout.splits["test"]
    image, info = read_image(train.image_path, 3)
    assert image.shape == (1, 31, 61, 29) and image.dtype == np.uint16 and info.axes == "ZYX"
    assert read_image(train.target_path, 3)[0].shape == (1, 31, 61, 29)
    assert read_image(test.image_path, 3)[0].shape == (1, 31, 61, 28)
    assert read_image(test.target_path, 3)[0].shape == (1, 31, 61, 28)
    with pytest.raises(UserError, match="--spatial_dims=3"):
        BiaPyLayout.find(root, spatial_dims=2)


# --- splits and matching -----------------------------------------------------------------------------------


def test_carve_is_seeded_deterministic_and_keeps_train(tmp_path: Path) -> None:
    names = [f"img{i:02d}" for i in range(10)]
    first = carve_validation(names, 0.3, seed=7)
    assert first == carve_validation(list(reversed(names)), 0.3, seed=7)  # listing order does not matter
    assert len(first[1]) == 3 and sorted(first[0] + first[1]) == names
    assert len({tuple(carve_validation(names, 0.3, seed)[1]) for seed in range(6)}) > 1
    assert carve_validation(["a", "b"], 0.01, 0)[1] != []  # at least one when asked for any
    assert carve_validation(["a", "b"], 0.9, 0)[0] != []  # at least one left to train on
    layout = BiaPyLayout.find(gray_layout(tmp_path, tuple(names)), val_fraction=0.3, seed=7)
    assert [s.name for s in layout.splits["val"]] == first[1]
    assert all(s.target_path is not None and s.target_path.stem == s.name for s in layout.splits["val"])


def test_val_folder_is_used_as_is(tmp_path: Path) -> None:
    gray_layout(tmp_path)
    gray_layout(tmp_path, ("v",), split="val", masks=False)
    layout = BiaPyLayout.find(tmp_path, val_fraction=0.5)
    assert layout.val_source == "folder"
    assert [s.name for s in layout.splits["train"]] == ["a", "b", "c"]
    assert layout.splits["val"] == [layout.splits["val"][0]] and layout.splits["val"][0].target_path is None
    assert layout.has_targets("train") and not layout.has_targets("val") and layout.splits["test"] == []


def test_targets_match_by_name_and_missing_or_extra_ones_are_named(tmp_path: Path) -> None:
    root = gray_layout(tmp_path)
    (root / "train" / "y" / "b.tif").unlink()
    png = write(root / "train" / "y" / "b.png", np.zeros((16, 20), np.uint8))  # another format, same name
    layout = BiaPyLayout.find(root, val_fraction=0)
    assert [s.target_path for s in layout.splits["train"] if s.name == "b"] == [png]
    (root / "train" / "y" / "c.tif").unlink()
    with pytest.raises(UserError, match=r"has no target for .*train/x/c\.tif") as missing:
        BiaPyLayout.find(root)
    assert "\n" not in str(missing.value)
    write(root / "train" / "y" / "c.tif", np.zeros((16, 20), np.uint8))
    write(root / "train" / "y" / "zz.tif", np.zeros((16, 20), np.uint8))
    with pytest.raises(UserError, match=r"y/zz\.tif matches no image"):
        BiaPyLayout.find(root)


def test_missing_train_x_shows_the_layout(tmp_path: Path) -> None:
    (tmp_path / "train" / "images").mkdir(parents=True)
    with pytest.raises(UserError, match=r"no train/x folder: expected BiaPy's layout root/train/x/<images>"):
        BiaPyLayout.find(tmp_path)
    with pytest.raises(UserError, match="--spatial_dims=4"):
        BiaPyLayout.find(tmp_path, spatial_dims=4)
    with pytest.raises(UserError, match="--val_fraction=1"):
        BiaPyLayout.find(tmp_path, val_fraction=1)


def test_archive_debris_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = gray_layout(tmp_path)
    for debris in ("__MACOSX/x/._a.tif", "._a.tif", ".DS_Store", "Thumbs.db"):
        path = root / "train" / "x" / debris
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0\5\26\7 AppleDouble junk")
    (root / "train" / "y" / "._a.tif").write_bytes(b"junk")
    with caplog.at_level(logging.WARNING, logger="innerssl.data.biapy_layout"):
        layout = BiaPyLayout.find(root, val_fraction=0)
    assert [s.name for s in layout.splits["train"]] == ["a", "b", "c"]
    assert not layout.bad_files and caplog.text == ""


def test_corrupt_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = gray_layout(tmp_path, masks=False)
    (root / "train" / "x" / "broken.tif").write_bytes(b"II*\0 definitely not a TIFF")
    truncated = write(root / "train" / "x" / "stack.tif", ramp((5, 16, 20)), compression="zlib")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    log = BadFileLog(tmp_path / "bad_files.txt")
    layout = BiaPyLayout.find(root, val_fraction=0, bad_file_log=log)
    assert [s.name for s in layout.splits["train"]] == ["a", "b", "c"]
    assert set(layout.bad_files) == {root / "train" / "x" / "broken.tif", truncated}
    assert set(read_bad_file_log(tmp_path / "bad_files.txt")) == {str(p) for p in layout.bad_files}
    assert "truncated" in layout.bad_files[truncated]  # not read as its first page
    # Broken pixel data behind a good header passes the scan and is refused when read.
    cut = write(tmp_path / "cut.tif", ramp((64, 64)), compression="zlib")
    cut.write_bytes(cut.read_bytes()[: int(cut.stat().st_size * 0.6)])
    assert probe_image(cut, 2).shape == (1, 64, 64)
    with pytest.raises(BadImageFile, match="truncated stream"):
        read_image(cut, 2)


# --- channels and axes ---------------------------------------------------------------------------------------


def test_multichannel_tiffs_become_channel_first(tmp_path: Path) -> None:
    rgb = ramp((16, 20, 3))
    for name, options in (("rgb.tif", {}), ("planes.tif", {"photometric": "minisblack"})):
        image, info = read_image(write(tmp_path / name, rgb, **options), 2)
        assert image.shape == (3, 16, 20) and np.array_equal(image, np.moveaxis(rgb, -1, 0))
        assert info.dtype == np.uint16 and info.axes == "YXC"
    volume = ramp((5, 16, 20, 2))
    image, info = read_image(write(tmp_path / "vol.tif", volume), 3)
    assert image.shape == (2, 5, 16, 20) and np.array_equal(image, np.moveaxis(volume, -1, 0))
    assert info.axes == "ZYXC" and probe_image(tmp_path / "vol.tif", 3) == info
    hyper = ramp((5, 2, 16, 20))
    image, info = read_image(write(tmp_path / "hyper.tif", hyper, imagej=True, metadata={"axes": "ZCYX"}), 3)
    assert np.array_equal(image, np.moveaxis(hyper, 1, 0)) and info.axes == "ZCYX"


def test_npy_png_dicom_and_nifti(tmp_path: Path) -> None:
    image, info = read_image(write(tmp_path / "a.npy", ramp((16, 20, 2), np.int16)), 2)
    assert image.shape == (2, 16, 20) and image.dtype == np.int16 and info.dtype_max == 32767
    big_endian = write(tmp_path / "be.npy", ramp((16, 20)).astype(">u2"))
    image, _ = read_image(big_endian, 2)
    assert image.dtype == np.dtype("=u2") and np.array_equal(image[0], ramp((16, 20)))
    floats, info = read_image(write(tmp_path / "f.npy", ramp((4, 16, 20), np.float64) / 7), 3)
    assert floats.dtype == np.float32 and info.dtype_max is None
    for name, pixels, channels in (
        ("gray.png", ramp((16, 20), np.uint8), 1),
        ("rgb.png", ramp((16, 20, 3), np.uint8), 3),
        ("rgba.png", ramp((16, 20, 4), np.uint8), 3),
    ):
        image, info = read_image(write(tmp_path / name, pixels), 2)
        assert image.shape == (channels, 16, 20) and image.dtype == np.float32 and info.dtype_max == 1.0
        assert probe_image(tmp_path / name, 2) == info  # the header probe agrees with image_io's decoding
        assert np.allclose(image[0], pixels[..., 0] / 255 if channels > 1 else pixels / 255)
    dicom = Path(examples.get_path("ct"))
    assert read_image(dicom, 2)[1] == probe_image(dicom, 2)
    with pytest.raises(UserError, match="--spatial_dims=2"):
        read_image(tmp_path / "gray.png", 3)
    volume = ramp((20, 16, 5))  # NIfTI (i, j, k) = (x, y, z)
    image, info = read_image(write(tmp_path / "v.nii.gz", volume), 3)
    assert image.shape == (1, 5, 16, 20) and np.array_equal(image[0], volume.transpose(2, 1, 0))
    assert info.axes == "XYZ" and probe_image(tmp_path / "v.nii.gz", 3) == info
    with pytest.raises(UserError, match="--spatial_dims=3"):
        read_image(tmp_path / "v.nii.gz", 2)


def test_ambiguous_arrays_are_refused(tmp_path: Path) -> None:
    stack = write(tmp_path / "stack.tif", ramp((12, 16, 20)))
    with pytest.raises(UserError, match=r"shape \(12, 16, 20\).*set --spatial_dims=3"):
        read_image(stack, 2)
    assert read_image(stack, 3)[0].shape == (1, 12, 16, 20)
    with pytest.raises(UserError, match="channel-first"):
        read_image(write(tmp_path / "cf.npy", ramp((3, 16, 20))), 2)  # not a 16-row image with 20 channels
    with pytest.raises(UserError, match=r"shape \(4, 30, 6\)"):  # 6 "channels" but only 4 rows: a thin stack?
        read_image(write(tmp_path / "thin.npy", ramp((4, 30, 6))), 2)
    assert read_image(write(tmp_path / "small.npy", ramp((7, 30, 6))), 2)[0].shape == (6, 7, 30)
    with pytest.raises(UserError, match="channels-last"):
        read_image(write(tmp_path / "cf.npy", ramp((2, 5, 16, 20))), 3)
    with pytest.raises(UserError, match="set --spatial_dims=2"):
        read_image(write(tmp_path / "rgb.tif", ramp((16, 20, 3))), 3)
    # tifffile's imagej=True default labels a plain stack as channels: metadata wins, the user is told why
    with pytest.raises(UserError, match="2D image with 5 channel"):
        read_image(write(tmp_path / "ij.tif", ramp((5, 16, 20)), imagej=True), 3)
    assert read_image(write(tmp_path / "one.npy", ramp((1, 16, 20))), 2)[0].shape == (1, 16, 20)
    with pytest.raises(BadImageFile, match="NaN"):
        read_image(write(tmp_path / "nan.npy", np.full((16, 20), np.nan, np.float32)), 2)


def test_mixed_channel_counts_name_the_odd_file(tmp_path: Path) -> None:
    root = gray_layout(tmp_path, masks=False)
    write(root / "test" / "x" / "colour.tif", ramp((16, 20, 3)))
    with pytest.raises(UserError, match=r"test/x/colour\.tif has 3 channel\(s\) but the other images have 1"):
        BiaPyLayout.find(root)
    shutil.rmtree(root / "test")
    layout = BiaPyLayout.find(root)
    assert layout.channels == 1 and layout.target_channels is None
