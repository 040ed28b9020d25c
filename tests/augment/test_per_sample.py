"""The per-sample torchvision pipeline: shapes, ranges, randomness per call, and each step's effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from innerssl.augment.config import AugmentationConfig, load_augmentation_config, parse_augmentation_config
from innerssl.augment.per_sample import (
    LUMINANCE_WEIGHTS,
    ChannelAwareColorJitter,
    MultiViews,
    RandomGaussianBlur,
    ToChannels,
    TwoViews,
    build_per_sample_transform,
)
from innerssl.augment.views import view_shape, with_crop_scale
from tests.augment.all_on import all_on_config

AUGMENTATIONS = Path(__file__).resolve().parents[2] / "augmentations"
SHIPPED = sorted(AUGMENTATIONS.glob("*.yaml"))

ALL_ON: dict[str, Any] = all_on_config(40, 32)


def config_from(data: dict[str, Any]) -> AugmentationConfig:
    return parse_augmentation_config(data, "test.yaml")


def only(switch: str, block: str | None = None, **params: Any) -> AugmentationConfig:
    """A config with one augmentation switched on (and its parameters), nothing else."""
    augmentation: dict[str, Any] = {switch: True}
    if block is not None:
        augmentation[block] = params
    return config_from({"augmentation": augmentation})


def image(channels: int = 1, height: int = 32, width: int = 32, low: float = 0.0) -> torch.Tensor:
    """Smooth-ish random image in [low, 1] (a gradient plus noise) so geometry changes are visible."""
    gradient = torch.linspace(0, 1, width).expand(channels, height, width)
    mixed = 0.5 * gradient + 0.5 * torch.rand(channels, height, width)
    return low + (1 - low) * mixed


@pytest.mark.parametrize("source_channels", [1, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_output_shape_dtype_range(source_channels: int, in_channels: int) -> None:
    transform = build_per_sample_transform(config_from(ALL_ON), in_channels)
    for _ in range(5):
        out = transform(image(source_channels, 48, 56))
        assert out.shape == (in_channels, 32, 32)
        assert out.dtype == torch.float32
        assert out.is_contiguous()
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_every_shipped_file_builds_and_runs(path: Path) -> None:
    config = load_augmentation_config(path)
    expected = config.preprocess.center_crop_size or 32
    out = build_per_sample_transform(config, in_channels=3)(image(1, 32, 32))
    assert out.shape == (3, expected, expected)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_two_views_differ() -> None:
    views = TwoViews(build_per_sample_transform(config_from(ALL_ON), 1))(image())
    assert isinstance(views, tuple) and len(views) == 2
    assert views[0].shape == views[1].shape
    assert not torch.equal(views[0], views[1])


@pytest.mark.parametrize(("size", "expected"), [(None, 32), (0.5, 16), (12, 12)])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_a_view_size_sets_the_output_size(size: float | None, expected: int, in_channels: int) -> None:
    out = build_per_sample_transform(config_from(ALL_ON), in_channels, view_size=size)(image(1, 48, 56))
    assert out.shape == (in_channels, expected, expected)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_a_view_size_without_a_crop_resizes_the_preprocessed_image() -> None:
    config = config_from({"preprocess": {"resize": 40, "center_crop_size": 32}})
    x = image(1, 48, 64)
    expected = F.resize(F.center_crop(F.resize(x, [40], antialias=True), [32, 32]), [16, 16], antialias=True)
    torch.testing.assert_close(build_per_sample_transform(config, 1, view_size=0.5)(x), expected)


def test_multi_views_give_each_groups_views_in_order() -> None:
    config = config_from(ALL_ON)
    local = with_crop_scale(config, (0.05, 0.4))
    assert local.augmentation.random_crop.scale == (0.05, 0.4) and local.augmentation.use_random_crop
    assert with_crop_scale(config, None) is config
    views = MultiViews(
        [(build_per_sample_transform(config, 1), 2), (build_per_sample_transform(local, 1, view_size=0.5), 3)]
    )(image(1, 48, 56))
    assert [tuple(view.shape) for view in views] == [(1, 32, 32)] * 2 + [(1, 16, 16)] * 3
    assert not torch.equal(views[2], views[3])


def test_view_shape_rules() -> None:
    assert view_shape(None, 20, 30) == (20, 30)
    assert view_shape(0.5, 20, 30) == (10, 10)  # a fraction of the shorter side
    assert view_shape(96, 224, 224) == (96, 96)
    assert view_shape(0.43, 224, 224) == (96, 96)  # DINO's default local crops of 224 px global views
    assert view_shape(0.01, 20, 20) == (1, 1)


def test_each_call_draws_new_parameters() -> None:
    transform = build_per_sample_transform(only("use_random_crop", "random_crop", scale=[0.3, 0.6]), 1)
    x = image()
    assert not torch.equal(transform(x), transform(x))


def test_seed_makes_output_reproducible() -> None:
    transform = build_per_sample_transform(config_from(ALL_ON), 3)
    x = image(3)
    torch.manual_seed(123)
    first = [transform(x) for _ in range(3)]
    torch.manual_seed(123)
    second = [transform(x) for _ in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_switches_off_is_deterministic_preprocess_only() -> None:
    config = config_from({**ALL_ON, "preprocess": {"resize": 40, "center_crop_size": 32}}).preprocess_only()
    transform = build_per_sample_transform(config, 1)
    x = image(1, 48, 64)
    expected = F.center_crop(F.resize(x, [40], antialias=True), [32, 32])
    assert torch.equal(transform(x), expected)
    assert torch.equal(transform(x), transform(x))


def test_no_preprocess_no_augmentation_is_identity() -> None:
    x = image(3, 20, 24)
    assert torch.equal(build_per_sample_transform(AugmentationConfig(), 3)(x), x)


def test_resize_only_keeps_aspect_and_random_crop_keeps_that_size() -> None:
    config = config_from({"preprocess": {"resize": 24}, "augmentation": {"use_random_crop": True}})
    out = build_per_sample_transform(config, 1)(image(1, 32, 48))
    assert out.shape == (1, 24, 36)


def test_gamma_changes_pixels() -> None:
    x = image()
    out = build_per_sample_transform(only("use_gamma_transform", "gamma", scale=[2.0, 2.0]), 1)(x)
    torch.testing.assert_close(out, x**2)


def test_gaussian_noise_changes_pixels() -> None:
    x = image(low=0.3) * 0.5
    config = only("use_gaussian_noise", "gaussian_noise", std=0.05, p_apply=1.0)
    out = build_per_sample_transform(config, 1)(x)
    difference = out - x
    assert (difference != 0).float().mean() > 0.9
    assert 0.02 < difference.std() < 0.08


def test_random_erasing_changes_pixels() -> None:
    x = image(low=0.2)
    config = only("use_random_erasing", "random_erasing", scale=[0.1, 0.2], p_apply=1.0)
    out = build_per_sample_transform(config, 1)(x)
    erased = out == 0
    assert 0.05 < erased.float().mean() < 0.3
    assert torch.equal(out[~erased], x[~erased])


def test_solarize_inverts_above_threshold() -> None:
    x = image()
    out = build_per_sample_transform(only("use_solarize", "solarize", threshold=0.0, p_apply=1.0), 1)(x)
    torch.testing.assert_close(out, 1 - x)


def test_blur_smooths() -> None:
    x = torch.rand(1, 32, 32)
    config = only("use_gaussian_blur", "gaussian_blur", kernel_fraction=0.3, sigma=[2.0, 2.0], p_apply=1.0)
    out = build_per_sample_transform(config, 1)(x)
    assert out.std() < 0.5 * x.std()


def test_blur_kernel_is_odd_fraction_of_shorter_side() -> None:
    blur = RandomGaussianBlur(config_from({}).augmentation.gaussian_blur)
    assert blur.kernel_size(224, 300) == 23
    assert blur.kernel_size(8, 8) == 3


def test_elastic_changes_pixels() -> None:
    x = image()
    config = only("use_elastic_transform", "elastic_transform", sigma=2, alpha=4, p_apply=1.0)
    out = build_per_sample_transform(config, 1)(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)


def test_elastic_is_torchvisions_and_also_takes_images_smaller_than_its_kernel() -> None:
    x = image(1, 40, 48)
    ours = build_per_sample_transform(
        only("use_elastic_transform", "elastic_transform", sigma=3, alpha=10, p_apply=1.0), 1
    )
    theirs = v2.ElasticTransform(alpha=20.0, sigma=3.0)  # torchvision's alpha is twice InnerEye's (pixels)
    torch.manual_seed(0)
    expected = theirs(x)
    torch.manual_seed(0)
    torch.testing.assert_close(ours(x), expected, rtol=0, atol=0)
    small = image(1, 12, 12)  # sigma 4: torchvision's 33 px kernel cannot reflect-pad a 12 px image
    config = only("use_elastic_transform", "elastic_transform", sigma=4, alpha=4, p_apply=1.0)
    out = build_per_sample_transform(config, 1)(small)
    assert out.shape == small.shape and not torch.allclose(out, small)


def test_affine_and_flip_change_geometry() -> None:
    x = image()
    flip = build_per_sample_transform(only("use_random_horizontal_flip", "random_horizontal_flip", prob=1.0), 1)
    assert torch.equal(flip(x), x.flip(-1))
    rotate = build_per_sample_transform(only("use_random_affine", "random_affine", max_angle=45), 1)
    assert not torch.allclose(rotate(x), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_color_jitter_works_for_gray_and_rgb(channels: int) -> None:
    config = only("use_random_color", "random_color", brightness=0.5, contrast=0.5, saturation=0.5, p_apply=1.0)
    x = image(channels)
    out = build_per_sample_transform(config, channels)(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)


def test_color_jitter_ignores_saturation_for_gray() -> None:
    jitter = ChannelAwareColorJitter(config_from({}).augmentation.random_color)
    assert jitter.gray.saturation is None and jitter.gray.hue is None


def test_uint8_input_is_scaled() -> None:
    x = torch.randint(0, 256, (1, 16, 16), dtype=torch.uint8)
    out = build_per_sample_transform(AugmentationConfig(), 1)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.float() / 255)


def test_rejects_non_image_input() -> None:
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_per_sample_transform(AugmentationConfig(), 1)(torch.rand(2, 1, 8, 8))


def test_to_channels_gray_to_rgb_repeats() -> None:
    x = torch.rand(1, 4, 5)
    out = ToChannels(3)(x)
    assert out.shape == (3, 4, 5)
    for channel in out:
        assert torch.equal(channel, x[0])


def test_to_channels_rgb_to_gray_uses_luminance() -> None:
    x = torch.rand(3, 4, 5)
    expected = sum(w * x[i] for i, w in enumerate(LUMINANCE_WEIGHTS)).unsqueeze(0)
    torch.testing.assert_close(ToChannels(1)(x), expected)
    torch.testing.assert_close(ToChannels(1)(x), F.rgb_to_grayscale(x), atol=1e-3, rtol=0)


def test_to_channels_same_count_unchanged_and_batches() -> None:
    x = torch.rand(3, 4, 5)
    assert ToChannels(3)(x) is x
    assert ToChannels(1)(torch.rand(2, 3, 4, 5)).shape == (2, 1, 4, 5)


def test_to_channels_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ToChannels(0)
    with pytest.raises(ValueError, match="2 channels"):
        ToChannels(3)(torch.rand(2, 4, 4))
