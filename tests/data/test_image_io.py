"""read_image: one entry point for PNG / JPEG / BMP / TIFF / DICOM, always float32 in [0, 1]."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from innerssl.data.dicom import read_dicom_image
from innerssl.data.image_io import SUPPORTED_SUFFIXES, read_image
from innerssl.errors import BadImageFile

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NO_SHARED_DATA = f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)"
GRADIENT_8 = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
GRADIENT_16 = np.linspace(0, 65535, 12 * 10).astype(np.uint16).reshape(12, 10)


def rgb_pixels() -> np.ndarray:
    pixels = np.zeros((6, 8, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    pixels[..., 2] = np.arange(8, dtype=np.uint8) * 30
    return pixels


def check_unit_float(image: np.ndarray, shape: tuple[int, ...]) -> None:
    assert image.dtype == np.float32
    assert image.shape == shape
    assert 0.0 <= image.min() and image.max() <= 1.0


# --- Pillow formats -----------------------------------------------------------------------------------


def test_png_8bit_gray_is_divided_by_255(tmp_path: Path) -> None:
    path = tmp_path / "gray.png"
    Image.fromarray(GRADIENT_8).save(path)
    image = read_image(path)
    check_unit_float(image, GRADIENT_8.shape)
    np.testing.assert_array_equal(image, GRADIENT_8.astype(np.float32) / 255)


def test_png_16bit_gray_is_divided_by_65535(tmp_path: Path) -> None:
    path = tmp_path / "gray16.png"
    Image.fromarray(GRADIENT_16).save(path)
    image = read_image(path)
    check_unit_float(image, GRADIENT_16.shape)
    np.testing.assert_allclose(image, GRADIENT_16 / 65535, atol=1e-7)
    assert image.max() == 1.0


def test_png_rgb_keeps_three_channels(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    Image.fromarray(rgb_pixels()).save(path)
    image = read_image(path)
    check_unit_float(image, (6, 8, 3))
    np.testing.assert_allclose(image, rgb_pixels() / 255, atol=1e-7)


def test_png_rgba_drops_alpha(tmp_path: Path) -> None:
    rgba = np.concatenate([rgb_pixels(), np.full((6, 8, 1), 7, dtype=np.uint8)], axis=-1)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = read_image(path)
    check_unit_float(image, (6, 8, 3))
    np.testing.assert_allclose(image, rgb_pixels() / 255, atol=1e-7)


def test_palette_png_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    Image.fromarray(rgb_pixels()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path)
    image = read_image(path)
    check_unit_float(image, (6, 8, 3))
    assert image[..., 0].min() > 0.9  # the red channel survives the palette round trip


def test_gray_with_alpha_becomes_gray(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(GRADIENT_8).convert("LA").save(path)
    image = read_image(path)
    check_unit_float(image, GRADIENT_8.shape)
    np.testing.assert_array_equal(image, GRADIENT_8.astype(np.float32) / 255)


def test_jpeg_and_bmp_and_upper_case_suffix(tmp_path: Path) -> None:
    Image.fromarray(GRADIENT_8).save(tmp_path / "gray.JPG", quality=95)
    Image.fromarray(rgb_pixels()).save(tmp_path / "rgb.bmp")
    jpeg = read_image(tmp_path / "gray.JPG")
    check_unit_float(jpeg, GRADIENT_8.shape)
    assert np.abs(jpeg - GRADIENT_8 / 255).max() < 0.05  # lossy
    check_unit_float(read_image(tmp_path / "rgb.bmp"), (6, 8, 3))


def test_nih_png_from_shared_data() -> None:
    images = sorted((SHARED_DATA / "nih-sample" / "images").glob("*.png"))[:1]
    if not images:
        pytest.skip(NO_SHARED_DATA)
    check_unit_float(read_image(images[0]), (1024, 1024))


# --- TIFF -------------------------------------------------------------------------------------------


def test_tiff_uint16_is_divided_by_dtype_max(tmp_path: Path) -> None:
    path = tmp_path / "gray16.tif"
    tifffile.imwrite(path, GRADIENT_16)
    image = read_image(path)
    check_unit_float(image, GRADIENT_16.shape)
    np.testing.assert_allclose(image, GRADIENT_16 / 65535, atol=1e-7)


def test_tiff_float_is_kept_and_clipped(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.0, 0.25], [0.75, 1.0, 3.0], [np.nan, 0.5, 0.5]], dtype=np.float32)
    path = tmp_path / "float.tiff"
    tifffile.imwrite(path, values)
    image = read_image(path)
    check_unit_float(image, (3, 3))
    np.testing.assert_array_equal(image, [[0.0, 0.0, 0.25], [0.75, 1.0, 1.0], [0.0, 0.5, 0.5]])


def test_tiff_rgb_contiguous_and_planar(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", rgb_pixels(), photometric="rgb")
    planar = np.moveaxis(rgb_pixels(), -1, 0)
    tifffile.imwrite(tmp_path / "planar.tif", planar, photometric="rgb", planarconfig="separate")
    for name in ("rgb.tif", "planar.tif"):
        image = read_image(tmp_path / name)
        check_unit_float(image, (6, 8, 3))
        np.testing.assert_allclose(image, rgb_pixels() / 255, atol=1e-7, err_msg=name)


def test_tiff_with_several_pages_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.zeros((4, 8, 8), dtype=np.uint8), photometric="minisblack")
    with pytest.raises(BadImageFile, match="several images"):
        read_image(path)


# --- DICOM dispatch ---------------------------------------------------------------------------------


def test_dicom_by_suffix_and_by_marker(tmp_path: Path) -> None:
    source = SHARED_DATA / "dicom" / "ct-slice-many-syntaxes" / "CTImage.dcm"
    if not source.is_file():
        pytest.skip(NO_SHARED_DATA)
    expected = read_dicom_image(source)
    unwindowed = read_dicom_image(source, apply_voi_lut=False)
    for name in ("upper.DCM", "scan.dicom", "IM0001", "1.2.840.113619.2.55.3"):
        shutil.copy(source, tmp_path / name)
        np.testing.assert_array_equal(read_image(tmp_path / name), expected, err_msg=name)
    np.testing.assert_array_equal(read_image(tmp_path / "IM0001", apply_voi_lut=False), unwindowed)


# --- errors -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(BadImageFile, match="file not found") as caught:
        read_image(path)
    assert caught.value.path == path and str(path) in str(caught.value)


def test_unknown_suffix_lists_the_supported_ones(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(BadImageFile) as caught:
        read_image(path)
    assert "'.txt'" in caught.value.reason
    assert all(suffix in caught.value.reason for suffix in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("name", ["broken.png", "broken.jpg", "broken.tif", "broken.dcm"])
def test_undecodable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40) if name.endswith(".png") else b"garbage" * 30)
    with pytest.raises(BadImageFile) as caught:
        read_image(path)
    assert caught.value.path == path
    assert "\n" not in str(caught.value)


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "truncated.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(BadImageFile, match="cannot be decoded"):
        read_image(path)
