import math

import nibabel
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from innerssl.data.biapy_layout import read_image
from innerssl.outputs.per_image import (
    mean_of_rows,
    output_suffix,
    plot_metric_comparison,
    write_image,
    write_label_map,
    write_mean_table,
    write_metrics_table,
)


def random_image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


@pytest.mark.parametrize(
    ("shape", "spatial_dims", "stored_shape", "axes"),
    [
        ((1, 20, 24), 2, (20, 24), "YX"),
        ((2, 20, 24), 2, (20, 24, 2), "YXS"),
        ((1, 5, 20, 24), 3, (5, 20, 24), "ZYX"),
        ((2, 5, 20, 24), 3, (5, 2, 20, 24), "ZCYX"),
    ],
)
def test_tiff_round_trip(tmp_path, shape, spatial_dims, stored_shape, axes):
    image = random_image(shape)
    path = write_image(torch.from_numpy(image), tmp_path, "a", ".TIF", spatial_dims)
    assert path == tmp_path / "a.tif"
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        assert series.shape == stored_shape and series.axes == axes and series.dtype == np.float32
        assert tiff.is_imagej == (spatial_dims == 3)  # Fiji opens volumes as stacks
    back, info = read_image(path, spatial_dims)
    np.testing.assert_array_equal(back, image)
    assert not list(tmp_path.glob(".*"))  # no temporary left


def test_npy_sources_and_odd_channel_counts_give_tiff():
    assert output_suffix(".npy", 2) == ".tif"
    assert output_suffix(".png", 2, channels=2) == ".tif"
    assert output_suffix(".png", 3) == ".tif"
    assert output_suffix("nii.gz", 3) == ".nii.gz" and output_suffix(".nii", 3) == ".nii.gz"
    assert output_suffix(".jpg", 2, channels=3) == ".png"


def test_png_grey_and_rgb_in_range(tmp_path):
    grey = np.linspace(-0.5, 1.5, 20 * 24, dtype=np.float32).reshape(1, 20, 24)
    path = write_image(grey, tmp_path, "grey", ".png", 2)
    assert path.suffix == ".png"
    pixels = np.asarray(Image.open(path))
    assert pixels.dtype == np.uint8 and pixels.shape == (20, 24)
    assert pixels.min() == 0 and pixels.max() == 255  # clipped to [0, 1], then scaled
    np.testing.assert_array_equal(pixels, np.round(np.clip(grey[0], 0, 1) * 255).astype(np.uint8))
    deep = np.asarray(Image.open(write_image(grey, tmp_path, "deep", ".png", 2, png_bits=16)))
    assert deep.max() == 65535
    rgb = random_image((3, 10, 12))
    colour = Image.open(write_image(rgb, tmp_path, "rgb", ".bmp", 2))
    assert colour.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(colour), np.round(np.transpose(rgb, (1, 2, 0)) * 255).astype(np.uint8))
    shifted = np.asarray(Image.open(write_image(grey, tmp_path, "shifted", ".png", 2, display_range=(-0.5, 1.5))))
    assert shifted[0, 0] == 0 and shifted[-1, -1] == 255
    assert write_image(random_image((2, 8, 8)), tmp_path, "two", ".png", 2).suffix == ".tif"


def reference_nifti(tmp_path, spatial_shape_ijk):
    affine = np.diag([0.5, 0.7, 2.0, 1.0])
    affine[:3, 3] = [10, -4, 3]
    path = tmp_path / "reference.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros(spatial_shape_ijk, dtype=np.float32), affine), path)
    return path, affine


@pytest.mark.parametrize("channels", [1, 2])
def test_nifti_round_trip_with_the_reference_affine(tmp_path, channels):
    image = random_image((channels, 5, 6, 7))  # (C, z, y, x)
    reference, affine = reference_nifti(tmp_path, (7, 6, 5))  # (i, j, k) = (x, y, z)
    path = write_image(image, tmp_path / "out", "b", ".nii.gz", 3, reference=reference)
    assert path.name == "b.nii.gz"
    written = nibabel.load(path)
    np.testing.assert_allclose(written.affine, affine)
    voxels = np.asarray(written.dataobj)
    assert voxels.shape == ((7, 6, 5) if channels == 1 else (7, 6, 5, channels))
    assert voxels[3, 2, 1, ...].ravel()[0] == image[0, 1, 2, 3]  # voxel (i, j, k) is pixel (z, y, x) = (k, j, i)
    back, _ = read_image(path, spatial_dims=3)
    np.testing.assert_array_equal(back, image)


def test_nifti_2d_and_without_reference(tmp_path):
    image = random_image((1, 6, 7))
    path = write_image(image, tmp_path, "flat", ".nii", 2)
    np.testing.assert_allclose(nibabel.load(path).affine, np.eye(4))
    back, _ = read_image(path, spatial_dims=2)
    np.testing.assert_array_equal(back, image)


def test_label_maps(tmp_path):
    labels = torch.tensor(np.random.default_rng(0).integers(0, 4, (5, 8, 9)))
    tiff = write_label_map(labels, tmp_path, "l3", ".tiff", 3)
    stored = tifffile.imread(tiff)
    assert stored.dtype == np.uint8 and stored.shape == (5, 8, 9)
    np.testing.assert_array_equal(read_image(tiff, 3)[0][0], labels.numpy())
    png = write_label_map(labels[0], tmp_path, "l2", ".png", 2)
    assert png.suffix == ".png" and np.asarray(Image.open(png)).dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(Image.open(png)), labels[0].numpy())
    big = write_label_map(np.array([[0, 300], [2, 1]]), tmp_path, "big", ".tif", 2)
    assert tifffile.imread(big).dtype == np.uint16
    reference, affine = reference_nifti(tmp_path, (9, 8, 5))
    nifti = write_label_map(labels, tmp_path, "l3", ".nii.gz", 3, reference=reference)
    assert np.asarray(nibabel.load(nifti).dataobj).dtype == np.uint8
    np.testing.assert_array_equal(read_image(nifti, 3)[0][0], labels.numpy())
    np.testing.assert_allclose(nibabel.load(nifti).affine, affine)
    with pytest.raises(ValueError, match="integers"):
        write_label_map(np.zeros((4, 4), dtype=np.float32), tmp_path, "f", ".tif", 2)
    with pytest.raises(ValueError, match="spatial"):
        write_label_map(labels, tmp_path, "wrong", ".tif", 2)


def test_metric_tables(tmp_path):
    rows = [
        {"name": "a", "psnr": 20.0, "ssim": 0.5, "input_psnr": 10.0},
        {"psnr": math.inf, "name": "b", "ssim": 0.7, "input_psnr": 12.0, "mae": 0.1},
        {"name": "c", "psnr": 30.0, "ssim": math.nan, "input_psnr": 14.0},
    ]
    table = pd.read_csv(write_metrics_table(rows, tmp_path / "test_metrics.csv"))
    assert list(table.columns) == ["name", "psnr", "ssim", "input_psnr", "mae"]
    assert list(table["name"]) == ["a", "b", "c"] and table["psnr"][1] == math.inf
    means = pd.read_csv(write_mean_table(rows, tmp_path / "test_metrics_mean.csv"))
    assert list(means.columns) == ["name", "psnr", "ssim", "input_psnr", "mae"] and len(means) == 1
    assert means["name"][0] == "mean" and means["psnr"][0] == math.inf
    assert means["ssim"][0] == pytest.approx(0.6) and means["input_psnr"][0] == pytest.approx(12.0)
    assert mean_of_rows(rows)["mae"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="name"):
        write_metrics_table([{"psnr": 1.0}], tmp_path / "bad.csv")


def test_comparison_chart_is_a_png(tmp_path):
    means = {"psnr": 28.0, "ssim": 0.9, "mae": 0.02, "mse": 0.001}
    baseline = {"psnr": math.inf, "ssim": 0.6, "mae": 0.08, "mse": 0.01}
    path = plot_metric_comparison(means, baseline, tmp_path / "charts" / "comparison.png", "crappify: test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert Image.open(path).size[0] > Image.open(path).size[1]  # four panels side by side
    assert not list(path.parent.glob(".*"))
