"""Normalisation modes on channel-first arrays and tensors: ranges, moments, clipping, degenerate images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from innerssl.data.normalisation import (
    Normalisation,
    divide_by_type_max,
    percentile_scale,
    type_max,
    zero_mean_unit_variance,
)
from innerssl.errors import UserError


def two_channels() -> np.ndarray:
    """Channels on very different scales, with a few outliers in the first."""
    rng = np.random.default_rng(0)
    image = np.stack([rng.integers(100, 200, (32, 32)), rng.integers(1000, 60000, (32, 32))]).astype(np.uint16)
    image[0, 0, :3] = 65535
    return image


def test_type_maxima_of_integer_dtypes() -> None:
    assert [type_max(np.dtype(t)) for t in (np.uint8, np.uint16, np.int16, np.bool_)] == [255, 65535, 32767, 1]
    assert type_max(np.dtype(np.float32)) is None and type_max(torch.float32) is None
    assert type_max(torch.uint8) == 255 and type_max(torch.int16) == 32767 and type_max(torch.bool) == 1
    image = np.array([[[0, 51, 255]]], np.uint8)
    assert np.allclose(divide_by_type_max(image), [[[0, 0.2, 1]]])
    assert divide_by_type_max(np.array([[[65535]]], np.uint16)).item() == 1.0
    assert divide_by_type_max(np.array([[[-32767]]], np.int16)).item() == -1.0
    assert divide_by_type_max(torch.tensor([[[255]]], dtype=torch.uint8)).dtype == torch.float32


def test_div_passes_unit_floats_and_refuses_others() -> None:
    unit = np.array([[[0.0, 0.25, 1.0]]], np.float32)
    assert np.array_equal(divide_by_type_max(unit), unit)
    assert np.allclose(divide_by_type_max(np.array([[[0.0, 500.0]]]), dtype_max=1000.0), [[[0, 0.5]]])
    with pytest.raises(UserError, match=r"--normalisation=div .*\[0, 300\].*percentile"):
        divide_by_type_max(np.array([[[0.0, 300.0]]], np.float32))


def test_percentile_scaling_is_per_channel_and_clipped() -> None:
    image = two_channels()
    scaled = percentile_scale(image, 1, 99)
    assert scaled.dtype == np.float32 and scaled.min() == 0 and scaled.max() == 1
    for channel in range(2):
        low, high = np.percentile(image[channel], [1, 99])
        inside = (image[channel] > low) & (image[channel] < high)
        expected = (image[channel][inside] - low) / (high - low)
        assert np.allclose(scaled[channel][inside], expected, atol=1e-6)
        assert np.mean(scaled[channel] == 1) <= 0.02  # only the top 1% saturates
    assert np.all(scaled[0, 0, :3] == 1)  # outliers clipped, not stretching the range
    tensor = percentile_scale(torch.from_numpy(image.astype(np.int32)), 1, 99)
    assert tensor.dtype == torch.float32 and np.allclose(tensor.numpy(), scaled, atol=1e-6)


def test_zero_mean_unit_variance_per_channel() -> None:
    image = two_channels()
    for normalised in (zero_mean_unit_variance(image), zero_mean_unit_variance(torch.from_numpy(image)).numpy()):
        assert normalised.dtype == np.float32
        assert np.allclose(normalised.reshape(2, -1).mean(axis=1), 0, atol=1e-5)
        assert np.allclose(normalised.reshape(2, -1).std(axis=1), 1, atol=1e-5)


def test_constant_images_give_zeros_not_nan() -> None:
    constant = np.full((2, 8, 8, 8), 0.1, np.float32)  # float rounding must not turn into noise
    for image in (constant, torch.from_numpy(constant), np.full((1, 8, 8), 7, np.uint16)):
        for normalised in (percentile_scale(image, 0.5, 99.5), zero_mean_unit_variance(image)):
            values = np.asarray(normalised)
            assert np.isfinite(values).all() and np.all(values == 0)
    spots = np.zeros((1, 20, 20), np.uint16)
    spots[0, 0, 0] = 9  # equal percentiles, not constant: a step at that value
    stepped = percentile_scale(spots, 1, 99)
    assert stepped[0, 0, 0] == 1 and stepped.sum() == 1


def test_parse_flags() -> None:
    assert Normalisation.parse("div") == Normalisation("div", (0.5, 99.5))
    assert Normalisation.parse(" Zero-Mean_Unit_Variance ").mode == "zero_mean_unit_variance"
    percentile = Normalisation.parse("percentile", "1, 99.8")
    assert percentile.percentile_clip == (1.0, 99.8)
    assert np.allclose(percentile(two_channels()), percentile_scale(two_channels(), 1, 99.8))
    assert np.allclose(Normalisation.parse("div")(np.array([[[0.0, 500.0]]]), dtype_max=1000.0), [[[0, 0.5]]])
    with pytest.raises(UserError, match=r"--normalisation=minmax is not a normalisation: use one of div"):
        Normalisation.parse("minmax")
    for bad in ("99", "a,b", "99,1", "0,101", "1,2,3"):
        with pytest.raises(UserError, match=f"--percentile_clip={bad} must be two percentiles"):
            Normalisation.parse("percentile", bad)
    with pytest.raises(UserError, match="--percentile_clip=1,99 only applies to --normalisation=percentile"):
        Normalisation.parse("div", "1,99")
