"""The batched augmentation: shapes, per-sample randomness, seeding, parity with torchvision, no host syncs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

from innerssl.augment import batched
from innerssl.augment.batched import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    BatchedAugmentation,
    build_batched_transform,
)
from innerssl.augment.config import (
    AffineConfig,
    AugmentationConfig,
    load_augmentation_config,
    parse_augmentation_config,
)
from innerssl.augment.per_sample import LUMINANCE_WEIGHTS, build_per_sample_transform
from innerssl.augment.views import ViewGroup, view_shape
from innerssl.data.pipeline import ImageStream
from innerssl.ssl.dino import DINO
from tests.augment.all_on import all_on_config

AUGMENTATIONS = Path(__file__).resolve().parents[2] / "augmentations"
SHIPPED = sorted(AUGMENTATIONS.glob("*.yaml"))
BILINEAR = InterpolationMode.BILINEAR
SIZE = 32
"""Output side of the test configs (preprocess: resize 36, center crop 32)."""

ALL_ON: dict[str, Any] = all_on_config(36, SIZE)

# One switch each, with parameters strong enough to change every sample (p_apply 1).
SINGLE_SWITCHES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "crop": ("use_random_crop", "random_crop", {"scale": [0.3, 0.6]}),
    "flip": ("use_random_horizontal_flip", "random_horizontal_flip", {"prob": 1.0}),
    "affine": ("use_random_affine", "random_affine", {"max_angle": 40, "max_horizontal_shift": 0.1}),
    "color": ("use_random_color", "random_color", {"brightness": 0.5, "contrast": 0.5, "saturation": 0.5, "hue": 0.2}),
    "gamma": ("use_gamma_transform", "gamma", {"scale": [2.0, 3.0]}),
    "blur": ("use_gaussian_blur", "gaussian_blur", {"kernel_fraction": 0.2, "sigma": [1.0, 2.0], "p_apply": 1.0}),
    "solarize": ("use_solarize", "solarize", {"threshold": 0.3, "p_apply": 1.0}),
    "elastic": ("use_elastic_transform", "elastic_transform", {"sigma": 2, "alpha": 4, "p_apply": 1.0}),
    "noise": ("use_gaussian_noise", "gaussian_noise", {"std": 0.1, "p_apply": 1.0}),
    "erasing": ("use_random_erasing", "random_erasing", {"scale": [0.1, 0.2], "p_apply": 1.0}),
}

# The same switches with p_apply (or prob) 0.5, to see some samples change and others not.
HALF_SWITCHES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "flip": ("use_random_horizontal_flip", "random_horizontal_flip", {"prob": 0.5}),
    "color": ("use_random_color", "random_color", {"brightness": 0.5, "contrast": 0.5, "p_apply": 0.5}),
    "blur": ("use_gaussian_blur", "gaussian_blur", {"kernel_fraction": 0.2, "sigma": [1.0, 2.0], "p_apply": 0.5}),
    "solarize": ("use_solarize", "solarize", {"threshold": 0.3, "p_apply": 0.5}),
    "elastic": ("use_elastic_transform", "elastic_transform", {"sigma": 2, "alpha": 4, "p_apply": 0.5}),
    "noise": ("use_gaussian_noise", "gaussian_noise", {"std": 0.1, "p_apply": 0.5}),
    "erasing": ("use_random_erasing", "random_erasing", {"scale": [0.1, 0.2], "p_apply": 0.5}),
}


def config_from(data: dict[str, Any]) -> AugmentationConfig:
    return parse_augmentation_config(data, "test.yaml")


def only(switch: str, block: str, params: dict[str, Any], preprocess: bool = True) -> AugmentationConfig:
    """A config with one augmentation switched on, and the test preprocess unless told otherwise."""
    data: dict[str, Any] = {"augmentation": {switch: True, block: params}}
    if preprocess:
        data["preprocess"] = ALL_ON["preprocess"]
    return config_from(data)


def images(count: int = 4, channels: int = 1, height: int = SIZE, width: int = SIZE, low: float = 0.0) -> torch.Tensor:
    """Float images in [low, 1]: a horizontal gradient plus noise, so geometry and colour changes show."""
    gradient = torch.linspace(0, 1, width).expand(count, channels, height, width)
    mixed = 0.5 * gradient + 0.5 * torch.rand(count, channels, height, width)
    return low + (1 - low) * mixed


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def as_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if dtype == torch.uint8:
        return (x * 255).round().to(torch.uint8)
    if dtype == torch.uint16:
        return (x * 65535).round().to(torch.int32).to(torch.uint16)
    return x.to(dtype)


@pytest.fixture(params=["index subsets", "masks"])
def selection_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the CPU's index-subset path and again with the GPU's mask path."""
    if request.param == "masks":
        monkeypatch.setattr(batched, "uses_index_subsets", lambda device: False)
    return request.param


# ----------------------------------------------------------------------------------------------------
# Shapes, dtypes, ranges


@pytest.mark.parametrize("dtype", [torch.uint8, torch.uint16, torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", sorted(SINGLE_SWITCHES))
def test_each_transform_shape_dtype_range(name: str, channels: int, dtype: torch.dtype) -> None:
    switch, block, params = SINGLE_SWITCHES[name]
    transform = build_batched_transform(only(switch, block, params), channels)
    x = as_dtype(images(3, channels, 40, 44), dtype)
    preprocessed = batched.preprocess(x, 36, SIZE)
    out = transform(x)
    assert out.shape == (3, channels, SIZE, SIZE)
    assert out.dtype == torch.float32 and out.device == x.device
    assert out.is_contiguous()
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Every switch, at these strengths, changes every sample.
    for sample in range(3):
        assert not torch.allclose(out[sample], preprocessed[sample], atol=1e-4), name


@pytest.mark.parametrize("source_channels", [1, 3])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_all_on_shape_and_range(source_channels: int, in_channels: int) -> None:
    transform = build_batched_transform(config_from(ALL_ON), in_channels)
    out = transform(images(5, source_channels, 48, 56))
    assert out.shape == (5, in_channels, SIZE, SIZE)
    assert out.dtype == torch.float32 and out.is_contiguous()
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("count", [0, 1])
def test_empty_and_single_batches(count: int) -> None:
    transform = build_batched_transform(config_from(ALL_ON), 3)
    out = transform(torch.randint(0, 256, (count, 1, 40, 48), dtype=torch.uint8))
    assert out.shape == (count, 3, SIZE, SIZE)
    assert out.dtype == torch.float32


def test_cpu_chunks_cover_the_whole_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two 32 px images per chunk: a batch of 5 runs in 3 chunks.
    monkeypatch.setattr(batched, "CPU_CHUNK_VALUES", 2 * SIZE * SIZE)
    x = images(1, 1, 40, 44).expand(5, -1, -1, -1).contiguous()
    first = build_batched_transform(config_from(ALL_ON), 1, seed=4)(x)
    again = build_batched_transform(config_from(ALL_ON), 1, seed=4)(x)
    assert first.shape == (5, 1, SIZE, SIZE) and first.is_contiguous()
    assert torch.equal(first, again)
    assert first.min() >= 0.0 and first.max() <= 1.0
    for i in range(4):
        assert not torch.allclose(first[i], first[i + 1])


def test_resize_only_keeps_aspect_ratio() -> None:
    config = config_from({"preprocess": {"resize": 24}, "augmentation": {"use_random_crop": True}})
    out = build_batched_transform(config, 1)(images(2, 1, 32, 48))
    assert out.shape == (2, 1, 24, 36)


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_every_shipped_file_builds_and_runs(path: Path) -> None:
    config = load_augmentation_config(path)
    expected = config.preprocess.center_crop_size or SIZE
    out = build_batched_transform(config, in_channels=3)(images(2, 1, SIZE, SIZE))
    assert out.shape == (2, 3, expected, expected)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_input_is_not_modified() -> None:
    # No preprocess: the float32 input would be the working tensor if it were not copied first.
    config = config_from({"augmentation": {**ALL_ON["augmentation"], "use_random_crop": False}})
    x = images(3, 3)
    before = x.clone()
    build_batched_transform(config, 3)(x)
    assert torch.equal(x, before)


def test_rejects_bad_input() -> None:
    transform = build_batched_transform(AugmentationConfig(), 1)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        transform(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        transform(torch.rand(2, 2, 8, 8))
    with pytest.raises(ValueError, match="uint8, uint16 or floating"):
        transform(torch.zeros(2, 1, 8, 8, dtype=torch.int32))


# ----------------------------------------------------------------------------------------------------
# Randomness: per sample, seeded, independent of torch's global generator


def test_identical_images_get_different_augmentations() -> None:
    x = images(1, 3).expand(6, -1, -1, -1).contiguous()
    out = build_batched_transform(config_from(ALL_ON), 3)(x)
    for i in range(6):
        for j in range(i + 1, 6):
            assert not torch.allclose(out[i], out[j]), (i, j)


@pytest.mark.parametrize("name", sorted(HALF_SWITCHES))
def test_half_probability_changes_some_samples_but_not_all(name: str, selection_path: str) -> None:
    switch, block, params = HALF_SWITCHES[name]
    count = 48
    x = images(1, 1, low=0.2).expand(count, -1, -1, -1).contiguous()
    out = build_batched_transform(only(switch, block, params, preprocess=False), 1, seed=3)(x)
    unchanged = torch.tensor([torch.equal(out[i], x[i]) for i in range(count)])
    assert 0 < int(unchanged.sum()) < count, f"{name} ({selection_path}): {int(unchanged.sum())} unchanged"
    if name == "flip":
        flipped = torch.tensor([torch.equal(out[i], x[i].flip(-1)) for i in range(count)])
        assert bool((flipped | unchanged).all())


def test_same_seed_same_outputs_different_seed_different() -> None:
    x = images(4, 3)
    first = build_batched_transform(config_from(ALL_ON), 3, seed=7)
    second = build_batched_transform(config_from(ALL_ON), 3, seed=7)
    other = build_batched_transform(config_from(ALL_ON), 3, seed=8)
    a1, a2 = first(x), first(x)
    assert torch.equal(a1, second(x)) and torch.equal(a2, second(x))
    assert not torch.allclose(a1, a2), "two calls (two views) must differ"
    assert not torch.allclose(a1, other(x))


def test_reseed_restarts_the_stream() -> None:
    transform = build_batched_transform(config_from(ALL_ON), 1, seed=1)
    assert isinstance(transform, BatchedAugmentation) and transform.seed == 1
    x = images(3)
    start = transform(x)
    transform(x)
    transform.reseed(1)
    assert torch.equal(transform(x), start)
    transform.reseed(2)
    assert transform.seed == 2
    assert not torch.allclose(transform(x), start)


def test_global_generator_is_neither_used_nor_needed() -> None:
    transform = build_batched_transform(config_from(ALL_ON), 1)
    x = images(3)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = transform(x)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(123)
    transform.reseed(0)
    assert torch.equal(transform(x), first)


# ----------------------------------------------------------------------------------------------------
# Preprocess and the no-augmentation config


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_preprocess_matches_per_sample_path(dtype: torch.dtype) -> None:
    x = as_dtype(images(3, 1, 48, 64), dtype)
    config = config_from(ALL_ON).preprocess_only()
    out = build_batched_transform(config, 1)(x)
    per_sample = build_per_sample_transform(config, 1)
    expected = torch.stack([per_sample(image) for image in x])
    assert out.shape == expected.shape == (3, 1, SIZE, SIZE)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_preprocess_skips_resize_at_the_target_size_and_pads_small_images() -> None:
    x = torch.randint(0, 256, (2, 1, 36, 40), dtype=torch.uint8)
    out = batched.preprocess(x, 36, SIZE)
    torch.testing.assert_close(out, F.center_crop(x.float() / 255, [SIZE, SIZE]))
    small = batched.preprocess(torch.ones(1, 1, 4, 5), None, 8)
    torch.testing.assert_close(small, F.center_crop(torch.ones(1, 1, 4, 5), [8, 8]))
    assert small.sum() == 20


def test_uint16_is_scaled_by_its_full_range() -> None:
    x = torch.tensor([0, 32768, 65535], dtype=torch.int32).to(torch.uint16).view(1, 1, 1, 3)
    out = build_batched_transform(AugmentationConfig(), 1)(x)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 32768 / 65535, 1.0]))


def test_no_augmentation_is_deterministic_preprocess_only() -> None:
    transform = build_batched_transform(config_from(ALL_ON).preprocess_only(), 1)
    assert not transform.is_random
    assert build_batched_transform(config_from(ALL_ON), 1).is_random
    x = images(3, 1, 40, 44)
    assert torch.equal(transform(x), batched.preprocess(x, 36, SIZE))
    assert torch.equal(transform(x), transform(x))
    identity = build_batched_transform(AugmentationConfig(), 3)
    y = images(2, 3)
    assert torch.equal(identity(y), y)


def test_channel_conversion_gray_to_rgb_and_rgb_to_gray() -> None:
    config = config_from(ALL_ON).preprocess_only()
    gray = images(2, 1, 40, 44)
    rgb = build_batched_transform(config, 3)(gray)
    assert rgb.shape == (2, 3, SIZE, SIZE) and rgb.is_contiguous()
    assert torch.equal(rgb[:, 0], rgb[:, 1]) and torch.equal(rgb[:, 0], rgb[:, 2])
    colour = images(2, 3, 40, 44)
    luminance = build_batched_transform(config, 1)(colour)
    pre = batched.preprocess(colour, 36, SIZE)
    expected = sum(w * pre[:, i : i + 1] for i, w in enumerate(LUMINANCE_WEIGHTS))
    torch.testing.assert_close(luminance, expected)


# ----------------------------------------------------------------------------------------------------
# Geometry: parity with torchvision for fixed parameters


def test_crop_matches_resized_crop() -> None:
    x = images(3, 3)
    boxes = torch.tensor([[3.0, 5.0, 20.0, 17.0], [0.0, 0.0, 32.0, 32.0], [10.0, 0.0, 22.0, 9.0]])
    out = batched.warp(x, boxes=boxes)
    for i, (top, left, height, width) in enumerate(boxes.int().tolist()):
        expected = F.resized_crop(x[i], top, left, height, width, [SIZE, SIZE], BILINEAR, antialias=True)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_crop_with_real_valued_box_is_close_to_the_rounded_box_inside() -> None:
    x = images(1, 1)
    out = batched.warp(x, boxes=torch.tensor([[4.3, 6.2, 18.6, 20.4]]))
    expected = F.resized_crop(x[0], 4, 6, 19, 20, [SIZE, SIZE], BILINEAR, antialias=True)
    assert (out[0] - expected)[:, 4:-4, 4:-4].abs().mean() < 0.05


def test_flip_matches_horizontal_flip() -> None:
    x = images(2, 3)
    flips = torch.tensor([True, False])
    out = batched.warp(x, flips=flips)
    torch.testing.assert_close(out[0], F.horizontal_flip(x[0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1], x[1], atol=1e-5, rtol=0)
    assert torch.equal(batched.horizontal_flip(x, flips)[0], x[0].flip(-1))


def test_affine_matches_torchvision_affine() -> None:
    x = images(3, 3)
    angles = torch.tensor([30.0, -75.0, 170.0])
    translations = torch.tensor([[2.0, -3.0], [0.0, 1.0], [-1.5, 0.5]])
    shears = torch.tensor([10.0, -25.0, 0.0])
    out = batched.warp(x, angles=angles, translations=translations, shears=shears)
    for i in range(3):
        expected = F.affine(
            x[i],
            angle=float(angles[i]),
            translate=translations[i].tolist(),
            scale=1.0,
            shear=[float(shears[i]), 0.0],
            interpolation=BILINEAR,
        )
        torch.testing.assert_close(out[i], expected, atol=1e-4, rtol=0)


def ramp_and_geometry() -> tuple[torch.Tensor, ...]:
    """Two images of an intensity linear in x and y (bilinear resampling is exact on them) and fixed crop boxes,
    flips, angles, translations and shears for them."""
    ys, xs = torch.meshgrid(
        torch.arange(SIZE, dtype=torch.float32), torch.arange(SIZE, dtype=torch.float32), indexing="ij"
    )
    ramp = (0.2 + 0.015 * xs + 0.008 * ys).expand(2, 1, SIZE, SIZE).contiguous()
    boxes = torch.tensor([[4.0, 6.0, 20.0, 24.0], [0.0, 2.0, 30.0, 28.0]])
    flips = torch.tensor([True, False])
    angles, translations, shears = (
        torch.tensor([12.0, -8.0]),
        torch.tensor([[1.0, -1.0], [0.0, 2.0]]),
        torch.tensor([6.0, -4.0]),
    )
    return ramp, boxes, flips, angles, translations, shears


def test_fused_crop_flip_affine_equals_the_sequence() -> None:
    # Bilinear interpolation is exact for an intensity that is linear in x and y, so away from the
    # borders one fused resampling must equal torchvision's three: this pins the order and the maths.
    ramp, boxes, flips, angles, translations, shears = ramp_and_geometry()
    out = batched.warp(ramp, boxes, flips, angles, translations, shears)
    centre = slice(10, 22)
    for i, (top, left, height, width) in enumerate(boxes.int().tolist()):
        expected = F.resized_crop(ramp[i], top, left, height, width, [SIZE, SIZE], BILINEAR, antialias=True)
        if flips[i]:
            expected = F.horizontal_flip(expected)
        expected = F.affine(
            expected, float(angles[i]), translations[i].tolist(), 1.0, [float(shears[i]), 0.0], BILINEAR
        )
        torch.testing.assert_close(out[i, :, centre, centre], expected[:, centre, centre], atol=1e-4, rtol=0)
    # Flipping after the affine instead would differ.
    wrong = F.horizontal_flip(batched.warp(ramp[:1], boxes[:1], None, angles[:1], translations[:1], shears[:1]))
    assert not torch.allclose(out[0, :, centre, centre], wrong[0, :, centre, centre], atol=1e-3)


def test_affine_after_crop_fills_zero_outside() -> None:
    x = images(1, 1, low=0.5)
    out = batched.warp(
        x, torch.tensor([[8.0, 8.0, 16.0, 16.0]]), None, torch.tensor([45.0]), torch.zeros(1, 2), torch.zeros(1)
    )
    assert out[0, 0, 0, 0] == 0 and out[0, 0, -1, -1] == 0
    assert out[0, 0, SIZE // 2, SIZE // 2] > 0.5


def test_crop_to_another_view_size_matches_resized_crop() -> None:
    x = images(3, 3)
    view = 16
    # Boxes no larger than the view (upsampling) match torchvision's antialiased resize; the larger one (a
    # downsampled local crop) matches bilinear sampling without antialiasing, which is what warp does.
    boxes = torch.tensor([[3.0, 5.0, 16.0, 12.0], [0.0, 0.0, 8.0, 8.0], [10.0, 0.0, 22.0, 20.0]])
    out = batched.warp(x, boxes=boxes, view_shape=(view, view))
    assert out.shape == (3, 3, view, view)
    for i, (top, left, height, width) in enumerate(boxes.int().tolist()):
        antialias = max(height, width) <= view
        expected = F.resized_crop(x[i], top, left, height, width, [view, view], BILINEAR, antialias=antialias)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_a_view_size_without_a_crop_resizes_the_whole_image() -> None:
    x = images(2, 1)
    out = batched.warp(x, view_shape=(24, 24))
    expected = F.resize(x, [24, 24], BILINEAR, antialias=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_fused_geometry_at_another_view_size_equals_the_sequence() -> None:
    # As test_fused_crop_flip_affine_equals_the_sequence, with the crop resized to a 20 px view: the affine
    # acts on the view (its translations in view pixels), as RandomResizedCrop(20) then RandomAffine would.
    view = 20
    ramp, boxes, flips, angles, translations, shears = ramp_and_geometry()
    out = batched.warp(ramp, boxes, flips, angles, translations, shears, view_shape=(view, view))
    centre = slice(6, 14)
    for i, (top, left, height, width) in enumerate(boxes.int().tolist()):
        expected = F.resized_crop(ramp[i], top, left, height, width, [view, view], BILINEAR, antialias=False)
        if flips[i]:
            expected = F.horizontal_flip(expected)
        expected = F.affine(
            expected, float(angles[i]), translations[i].tolist(), 1.0, [float(shears[i]), 0.0], BILINEAR
        )
        torch.testing.assert_close(out[i, :, centre, centre], expected[:, centre, centre], atol=1e-4, rtol=0)


def test_crop_boxes_follow_torchvision_sampler() -> None:
    boxes = batched.sample_crop_boxes(400, 40, 50, (0.3, 0.6), (0.75, 4 / 3), generator(), torch.device("cpu"))
    top, left, height, width = boxes.unbind(1)
    fraction = height * width / (40 * 50)
    assert fraction.min() >= 0.3 - 1e-5 and fraction.max() <= 0.6 + 1e-5
    assert fraction.min() < 0.35 and fraction.max() > 0.55
    ratio = width / height
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 4 / 3 + 1e-5
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 40 + 1e-4).all() and (left + width <= 50 + 1e-4).all()
    assert top.std() > 1 and left.std() > 1


def test_crop_boxes_fall_back_to_a_central_box() -> None:
    # A 2:1 to 3:1 ratio of 90% of a square image never fits, so every sample falls back to the
    # whole width with the ratio clamped to 2, centred.
    boxes = batched.sample_crop_boxes(20, 40, 40, (0.9, 1.0), (2.0, 3.0), generator(), torch.device("cpu"))
    expected = torch.tensor([10.0, 0.0, 20.0, 40.0]).expand(20, 4)
    torch.testing.assert_close(boxes, expected)


def test_affine_parameters_stay_in_range() -> None:
    config = AffineConfig(max_angle=30, max_horizontal_shift=0.1, max_vertical_shift=0.2, max_shear=10)
    angles, translations, shears = batched.sample_affine(500, 40, 50, config, generator(), torch.device("cpu"))
    for values, bound in ((angles, 30.0), (translations[:, 0], 5.0), (translations[:, 1], 8.0), (shears, 10.0)):
        assert values.abs().max() <= bound + 1e-5
        assert values.min() < -0.8 * bound and values.max() > 0.8 * bound


# ----------------------------------------------------------------------------------------------------
# Colour and intensity: parity with torchvision for fixed parameters


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (batched.adjust_brightness, F.adjust_brightness),
        (batched.adjust_contrast, F.adjust_contrast),
        (batched.adjust_saturation, F.adjust_saturation),
    ],
    ids=["brightness", "contrast", "saturation"],
)
def test_color_operations_match_torchvision(ours: Any, theirs: Any, channels: int) -> None:
    x = images(3, channels)
    factors = torch.tensor([0.3, 1.0, 1.7])
    out = ours(x, factors)
    for i in range(3):
        torch.testing.assert_close(out[i], theirs(x[i], float(factors[i])), atol=1e-5, rtol=0)


def test_one_blend_applies_a_different_color_operation_per_sample() -> None:
    x = images(4, 3)
    factors = torch.tensor([1.6, 0.4, 1.8, 1.0])
    mean_weights = torch.tensor([0.0, 1.0, 0.0, 0.0])
    gray_weights = torch.tensor([0.0, 0.0, 1.0, 0.0])
    out = batched.blend_with_gray(x, factors, mean_weights, gray_weights)
    torch.testing.assert_close(out[0], F.adjust_brightness(x[0], 1.6), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], F.adjust_contrast(x[1], 0.4), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2], F.adjust_saturation(x[2], 1.8), atol=1e-6, rtol=0)
    assert torch.equal(out[3], x[3])


def test_hue_matches_torchvision() -> None:
    x = images(4, 3)
    x[0, :, :4, :4] = 0.5  # gray pixels: no hue
    x[1, 0, :4, :4] = x[1, 1, :4, :4]  # ties between channels
    shifts = torch.tensor([0.1, -0.3, 0.5, -0.5])
    out = batched.adjust_hue(x, shifts)
    for i in range(4):
        torch.testing.assert_close(out[i], F.adjust_hue(x[i], float(shifts[i])), atol=1e-5, rtol=0)
    gray = images(2, 1)
    assert torch.equal(batched.adjust_hue(gray, shifts[:2]), gray)


def test_color_jitter_applies_each_samples_order(selection_path: str) -> None:
    x = images(3, 3, low=0.3)
    brightness, contrast = torch.tensor([1.8, 1.8, 1.8]), torch.tensor([0.4, 0.4, 0.4])
    saturation, hue = torch.tensor([1.5, 0.5, 1.2]), torch.tensor([0.1, -0.2, 0.3])
    order = torch.tensor(
        [[BRIGHTNESS, CONTRAST, SATURATION, HUE], [CONTRAST, BRIGHTNESS, HUE, SATURATION], [HUE, 0, 1, 2]]
    )
    applied = torch.tensor([True, True, False])
    out = batched.color_jitter(x, order, brightness, contrast, saturation, hue, applied)
    operations = {
        BRIGHTNESS: (F.adjust_brightness, brightness),
        CONTRAST: (F.adjust_contrast, contrast),
        SATURATION: (F.adjust_saturation, saturation),
        HUE: (F.adjust_hue, hue),
    }
    for i in range(2):
        expected = x[i]
        for op in order[i].tolist():
            adjust, factors = operations[op]
            expected = adjust(expected, float(factors[i]))
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[2], x[2])
    # Brightness first clips at 1, so the two orders really differ.
    assert not torch.allclose(
        out[0], batched.color_jitter(x[:1], order[1:2], brightness[:1], contrast[:1], saturation[:1], hue[:1])
    )


def test_color_order_is_random_per_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    captured: dict[str, torch.Tensor] = {}
    original = batched.color_jitter

    def spy(images: torch.Tensor, order: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        captured["order"] = order
        return original(images, order, *args, **kwargs)

    monkeypatch.setattr(batched, "color_jitter", spy)
    params = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
    build_batched_transform(only("use_random_color", "random_color", params, preprocess=False), 3)(images(480, 3, 4, 4))
    orders = {tuple(row) for row in captured["order"].tolist()}
    assert len(orders) == 24  # every permutation of the four operations occurs
    assert all(sorted(order) == [BRIGHTNESS, CONTRAST, SATURATION, HUE] for order in orders)
    # Gray images: only brightness and contrast, in both orders.
    build_batched_transform(only("use_random_color", "random_color", params, preprocess=False), 1)(images(64, 1, 4, 4))
    assert {tuple(row) for row in captured["order"].tolist()} == {(BRIGHTNESS, CONTRAST), (CONTRAST, BRIGHTNESS)}


def test_color_factors_stay_in_range() -> None:
    config = only("use_random_color", "random_color", {"brightness": 0.5, "contrast": 0.0}, preprocess=False)
    x = torch.full((200, 1, 4, 4), 0.4)
    out = build_batched_transform(config, 1)(x)[:, 0, 0, 0]
    factors = out / 0.4
    assert factors.min() >= 0.5 - 1e-5 and factors.max() <= 1.5 + 1e-5
    assert factors.min() < 0.6 and factors.max() > 1.4


def test_gamma_matches_power_and_stays_in_range() -> None:
    x = images(2)
    torch.testing.assert_close(batched.adjust_gamma(x, torch.tensor([0.5, 2.0])), torch.stack([x[0] ** 0.5, x[1] ** 2]))
    config = only("use_gamma_transform", "gamma", {"scale": [0.5, 1.5]}, preprocess=False)
    out = build_batched_transform(config, 1)(torch.full((200, 1, 2, 2), 0.5))[:, 0, 0, 0]
    gammas = torch.log(out) / math.log(0.5)
    assert gammas.min() >= 0.5 - 1e-4 and gammas.max() <= 1.5 + 1e-4
    assert gammas.min() < 0.6 and gammas.max() > 1.4


def test_solarize_matches_torchvision() -> None:
    x = images(2)
    out = batched.solarize(x, 0.6, torch.tensor([True, False]))
    torch.testing.assert_close(out[0], F.solarize(x[0], 0.6))
    assert torch.equal(out[1], x[1])


# ----------------------------------------------------------------------------------------------------
# Filters and elastic


def test_blur_matches_torchvision_per_sample_sigma() -> None:
    x = images(3, 3)
    sigmas = torch.tensor([0.3, 1.0, 2.5])
    out = batched.gaussian_blur(x, 7, sigmas)
    for i in range(3):
        expected = F.gaussian_blur(x[i], [7, 7], [float(sigmas[i])] * 2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_blur_kernel_is_the_per_sample_rule() -> None:
    config = only("use_gaussian_blur", "gaussian_blur", {"kernel_fraction": 0.3, "sigma": [3.0, 3.0], "p_apply": 1.0})
    x = images(2)
    out = build_batched_transform(config, 1)(x)
    pre = batched.preprocess(x, 36, SIZE)
    # kernel_fraction 0.3 of 32 px -> 10 -> 11 (odd), as RandomGaussianBlur.kernel_size.
    torch.testing.assert_close(out, F.gaussian_blur(pre, [11, 11], [3.0, 3.0]), atol=1e-5, rtol=0)


def test_elastic_matches_torchvision() -> None:
    x = images(2, 3)
    noise = torch.rand(2, 2, SIZE, SIZE) * 2 - 1
    smoothed = batched.smooth_noise(noise, 2.0)
    kernel = batched.elastic_kernel_size(2.0)
    assert kernel == 17
    torch.testing.assert_close(smoothed, F.gaussian_blur(noise, [kernel, kernel], [2.0, 2.0]), atol=1e-6, rtol=0)
    displacement = smoothed * 6.0
    out = batched.elastic(x, displacement)
    for i in range(2):
        # torchvision's displacement is in grid units: 2 / size per pixel.
        grid_units = torch.stack([displacement[i, 0] * 2 / SIZE, displacement[i, 1] * 2 / SIZE], dim=-1)
        expected = F.elastic(x[i], grid_units.unsqueeze(0), interpolation=BILINEAR, fill=None)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)


def test_elastic_displacement_is_torchvisions_recipe_at_full_resolution() -> None:
    # sigma below 2 * ELASTIC_SIGMA_PER_STRIDE: noise drawn per pixel, exactly torchvision's recipe.
    config = only("use_elastic_transform", "elastic_transform", {"sigma": 3, "alpha": 20}).augmentation
    assert batched.elastic_stride(3.0) == 1
    ours = batched.elastic_displacement(2, 40, 40, config.elastic_transform, generator(5), torch.device("cpu"))
    noise = torch.rand((2, 2, 40, 40), generator=generator(5)) * 2 - 1
    kernel = batched.elastic_kernel_size(3.0)
    torch.testing.assert_close(ours, F.gaussian_blur(noise, [kernel, kernel], [3.0, 3.0]) * 20, atol=1e-5, rtol=0)


def test_elastic_displacement_on_a_coarse_grid_keeps_the_statistics() -> None:
    # sigma 4: noise on a grid 2 px apart; amplitude and smoothness must match the per-pixel recipe.
    config = only("use_elastic_transform", "elastic_transform", {"sigma": 4, "alpha": 10}).augmentation
    assert batched.elastic_stride(4.0) == 2
    ours = batched.elastic_displacement(48, 96, 96, config.elastic_transform, generator(), torch.device("cpu"))
    assert ours.shape == (48, 2, 96, 96)
    kernel = batched.elastic_kernel_size(4.0)
    noise = torch.rand((48, 2, 96, 96), generator=generator(1)) * 2 - 1
    reference = F.gaussian_blur(noise, [kernel, kernel], [4.0, 4.0]) * 10

    def inner(field: torch.Tensor) -> torch.Tensor:
        return field[..., 16:-16, 16:-16]

    def correlation(field: torch.Tensor, lag: int) -> float:
        field = inner(field)
        return float((field[..., lag:] * field[..., :-lag]).mean() / field.pow(2).mean())

    assert abs(float(inner(ours).std() / inner(reference).std()) - 1) < 0.1
    assert abs(correlation(ours, 4) - correlation(reference, 4)) < 0.05
    assert abs(float(ours.mean())) < 0.05 * float(ours.std())


def test_noise_has_the_configured_std() -> None:
    x = torch.full((4, 1, 32, 32), 0.5)
    out = batched.add_gaussian_noise(x, 0.05, generator())
    assert abs(float((out - x).std()) - 0.05) < 0.005
    assert abs(float((out - x).mean())) < 0.005


# ----------------------------------------------------------------------------------------------------
# Erasing


def test_erasing_matches_torchvision_erase() -> None:
    x = images(2, 3, low=0.2)
    boxes = torch.tensor([[3, 4, 5, 6], [0, 0, 10, 2]])
    out = batched.erase(x, boxes, torch.tensor([True, False]))
    torch.testing.assert_close(out[0], F.erase(x[0], 3, 4, 5, 6, torch.tensor(0.0)))
    assert torch.equal(out[1], x[1])


def test_erasing_boxes_follow_torchvision_sampler() -> None:
    boxes, found = batched.sample_erasing_boxes(300, 40, 50, (0.05, 0.2), (0.3, 3.3), generator(), torch.device("cpu"))
    assert found.all()
    top, left, height, width = boxes.unbind(1)
    fraction = (height * width).float() / (40 * 50)
    # Sides are rounded to whole pixels, so the area fraction is only approximately in the range.
    assert fraction.min() > 0.03 and fraction.max() < 0.23
    assert (top >= 0).all() and (left >= 0).all() and (top + height <= 40).all() and (left + width <= 50).all()
    assert (height < 40).all() and (width < 50).all()
    assert top.float().std() > 1 and left.float().std() > 1
    # A box as large as the image never fits: nothing is erased.
    _, none = batched.sample_erasing_boxes(10, 8, 8, (1.0, 1.0), (1.0, 1.0), generator(), torch.device("cpu"))
    assert not none.any()


def test_erasing_in_the_pipeline_writes_zero_boxes() -> None:
    config = only("use_random_erasing", "random_erasing", {"scale": [0.1, 0.2], "p_apply": 1.0}, preprocess=False)
    x = images(6, 3, low=0.2)
    out = build_batched_transform(config, 3)(x)
    for i in range(6):
        erased = (out[i] == 0).all(dim=0)
        assert 0.05 < erased.float().mean() < 0.3
        rows, cols = erased.nonzero(as_tuple=True)
        # A rectangle: the erased pixels fill their bounding box.
        assert erased[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert torch.equal(out[i][:, ~erased], x[i][:, ~erased])


# ----------------------------------------------------------------------------------------------------
# View groups: other sizes and crop scales, several views in one pass

MULTI_CROP = (ViewGroup(2, crop_scale=(0.4, 1.0)), ViewGroup(3, size=0.5, crop_scale=(0.05, 0.4), role="local"))
"""DINO-style views of the test configs: two 32 px global views and three 16 px local crops."""


@pytest.mark.parametrize(("size", "expected"), [(None, SIZE), (0.5, 16), (12, 12), (1.0, SIZE)])
@pytest.mark.parametrize("channels", [1, 3])
def test_views_have_the_groups_size_relative_or_in_pixels(size: float | None, expected: int, channels: int) -> None:
    transform = build_batched_transform(config_from(ALL_ON), channels)
    out = transform(torch.randint(0, 256, (3, 1, 40, 44), dtype=torch.uint8), view_size=size)
    assert out.shape == (3, channels, expected, expected) and out.is_contiguous()
    assert out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", sorted(SINGLE_SWITCHES))
def test_every_switch_works_at_another_view_size(name: str) -> None:
    transform = build_batched_transform(only(*SINGLE_SWITCHES[name]), 1)
    out = transform(torch.randint(0, 256, (3, 1, 40, 44), dtype=torch.uint8), view_size=14)
    assert out.shape == (3, 1, 14, 14)


def test_views_are_one_pass_over_the_repeated_batch() -> None:
    x = torch.randint(0, 256, (4, 1, 40, 44), dtype=torch.uint8)
    first = build_batched_transform(config_from(ALL_ON), 1, seed=3).views(x, 3, 0.5, (0.05, 0.4))
    again = build_batched_transform(config_from(ALL_ON), 1, seed=3)(x.repeat(3, 1, 1, 1), 0.5, (0.05, 0.4))
    assert len(first) == 3 and all(view.shape == (4, 1, 16, 16) and view.is_contiguous() for view in first)
    torch.testing.assert_close(torch.cat(first), again, rtol=0, atol=0)
    for a, b in ((0, 1), (1, 2), (0, 2)):  # every view of an image has its own random parameters
        assert not torch.allclose(first[a], first[b])
    empty = build_batched_transform(config_from(ALL_ON), 1).views(x[:0], 2, 0.5)
    assert [tuple(view.shape) for view in empty] == [(0, 1, 16, 16)] * 2


def test_a_groups_crop_scale_replaces_the_configs_and_switches_the_crop_on() -> None:
    config = only("use_random_horizontal_flip", "random_horizontal_flip", {"prob": 0.5})
    transform = build_batched_transform(config, 1)
    geometry = transform.steps_for(None, (0.05, 0.1))[0]
    assert geometry.crop is not None and geometry.crop.scale == (0.05, 0.1) and geometry.flip_prob == 0.5
    assert transform.steps_for(None, (0.05, 0.1)) is transform.steps_for(None, (0.05, 0.1))  # built once
    assert transform.steps_for() is transform.steps
    # A 5-10 % crop of a gradient covers a narrow band of it: much less spread than the whole image.
    x = images(8, 1).sub(0.5 * torch.rand(8, 1, SIZE, SIZE)).clamp(0, 1)
    cropped = transform(x, crop_scale=(0.05, 0.1))
    spread = lambda batch: (batch.amax(dim=(1, 2, 3)) - batch.amin(dim=(1, 2, 3))).mean()  # noqa: E731
    assert spread(cropped) < 0.6 * spread(x)


def test_every_view_of_a_stream_comes_from_one_random_stream() -> None:
    x = torch.randint(0, 256, (4, 1, 40, 44), dtype=torch.uint8)
    first, second = (ImageStream(config_from(ALL_ON), 1, True, views=MULTI_CROP) for _ in range(2))
    first.reseed(5)
    second.reseed(5)
    views = first.to_encoder(x)
    assert [tuple(view.shape) for view in views] == [(4, 1, SIZE, SIZE)] * 2 + [(4, 1, 16, 16)] * 3
    for a, b in zip(views, second.to_encoder(x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert first.batched is not None and len(first.batched._generators) == 1


# ----------------------------------------------------------------------------------------------------
# Selection paths and host synchronisation


def test_apply_to_selected_paths_agree(selection_path: str) -> None:
    x = images(4, 3)
    sigmas = torch.tensor([0.5, 1.0, 1.5, 2.0])
    selected = torch.tensor([True, False, True, False])
    before = x.clone()
    out = batched.apply_to_selected(x, selected, lambda batch, s: batched.gaussian_blur(batch, 5, s), sigmas)
    assert torch.equal(x, before), "in_place=False must leave the input alone"
    full = batched.gaussian_blur(x, 5, sigmas)
    torch.testing.assert_close(out[selected], full[selected], atol=1e-6, rtol=0)
    assert torch.equal(out[~selected], x[~selected])
    none = torch.zeros(4, dtype=torch.bool)
    assert torch.equal(batched.apply_to_selected(x, none, lambda batch: batch + 1), x)


class _ForbidHostSync(TorchDispatchMode):
    """Fail on the operations that make a GPU wait for the host: reading values, data-dependent shapes."""

    FORBIDDEN = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten.is_nonzero.default,
        torch.ops.aten.item.default,
    }

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func in self.FORBIDDEN:
            raise AssertionError(f"host synchronisation: {func}")
        if func is torch.ops.aten.index.Tensor and any(
            index is not None and index.dtype == torch.bool for index in args[1]
        ):
            raise AssertionError("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels", [1, 3])
def test_mask_path_never_synchronises(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    transform = build_batched_transform(config_from(ALL_ON), channels)
    x = torch.randint(0, 256, (4, channels, 40, 44), dtype=torch.uint8)
    with _ForbidHostSync(), pytest.raises(AssertionError, match="host synchronisation"):
        transform(x)  # the CPU path selects samples by index: the check does catch it
    monkeypatch.setattr(batched, "uses_index_subsets", lambda device: False)
    with _ForbidHostSync():
        out = transform(x)
    assert out.shape == (4, channels, SIZE, SIZE)


@pytest.mark.parametrize("channels", [1, 3])
def test_mask_path_of_multi_size_views_never_synchronises(channels: int, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = ImageStream(config_from(ALL_ON), channels, True, views=MULTI_CROP)
    x = torch.randint(0, 256, (4, channels, 40, 44), dtype=torch.uint8)
    resize_only = build_batched_transform(config_from({"preprocess": ALL_ON["preprocess"]}), channels)
    monkeypatch.setattr(batched, "uses_index_subsets", lambda device: False)
    with _ForbidHostSync():
        views = stream.to_encoder(x)
        resized = resize_only.views(x, 2, view_size=12)  # a view size without a crop: the whole-image box
    assert [tuple(view.shape) for view in views] == [(4, channels, SIZE, SIZE)] * 2 + [(4, channels, 16, 16)] * 3
    assert [tuple(view.shape) for view in resized] == [(4, channels, 12, 12)] * 2


def test_the_sync_check_sees_the_index_path_of_local_crops() -> None:
    """The multi-size check can fail: the local crops alone, on the CPU's index-subset path, are caught."""
    stream = ImageStream(config_from(ALL_ON), 1, True, views=MULTI_CROP[1:])
    x = torch.randint(0, 256, (4, 1, 40, 44), dtype=torch.uint8)
    with _ForbidHostSync(), pytest.raises(AssertionError, match="host synchronisation|boolean-mask"):
        stream.to_encoder(x)


def dino_view_sides(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of every view DINO declares with its defaults (2 global + its local crops)."""
    return [view_shape(group.size, height, width) for group in DINO.view_groups() for _ in range(group.count)]


@pytest.mark.parametrize("path", SHIPPED, ids=[path.name for path in SHIPPED])
def test_mask_path_of_dinos_default_views_never_synchronises(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every shipped config with DINO's own multi-crop views (its defaults: 2 global + 6 local crops)."""
    config = load_augmentation_config(str(path))
    stream = ImageStream(config, 1, True, views=DINO.view_groups())
    x = torch.randint(0, 256, (2, 1, 40, 44), dtype=torch.uint8)
    monkeypatch.setattr(batched, "uses_index_subsets", lambda device: False)
    with _ForbidHostSync():
        views = stream.to_encoder(x)
    global_side = tuple(views[0].shape[-2:])
    assert [tuple(view.shape[-2:]) for view in views] == dino_view_sides(*global_side)
    assert len(views) == 8 and views[-1].shape[-1] < views[0].shape[-1]  # the local crops are smaller
    assert all(view.shape[:2] == (2, 1) and view.min() >= 0 and view.max() <= 1 for view in views)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("channels", [1, 3])
def test_cuda_pinned_batch_to_dino_views_runs_without_synchronising(channels: int) -> None:
    """A DINO training batch's path: pinned uint8 batch, non-blocking copy, 2 global + 6 local crops."""
    stream = ImageStream(config_from(ALL_ON), channels, True, views=DINO.view_groups())
    batch = torch.randint(0, 256, (8, 1, 40, 44), dtype=torch.uint8).pin_memory()
    stream.to_encoder(batch.to("cuda", non_blocking=True))  # warm up (lazy initialisation may synchronise)
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = stream.to_encoder(batch.to("cuda", non_blocking=True))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [tuple(view.shape[-2:]) for view in views] == dino_view_sides(SIZE, SIZE)
    assert all(view.is_cuda and view.shape[:2] == (8, channels) for view in views)
    assert all(view.min() >= 0.0 and view.max() <= 1.0 for view in views)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_multi_size_views_run_without_synchronising() -> None:
    stream = ImageStream(config_from(ALL_ON), 3, True, views=MULTI_CROP)
    x = torch.randint(0, 256, (8, 1, 40, 44), dtype=torch.uint8, device="cuda")
    stream.to_encoder(x)  # warm up (lazy initialisation may synchronise)
    torch.cuda.set_sync_debug_mode("error")
    try:
        views = stream.to_encoder(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert [tuple(view.shape) for view in views] == [(8, 3, SIZE, SIZE)] * 2 + [(8, 3, 16, 16)] * 3
    assert all(view.device == x.device and view.min() >= 0.0 and view.max() <= 1.0 for view in views)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_without_synchronising() -> None:
    transform = build_batched_transform(config_from(ALL_ON), 3)
    x = torch.randint(0, 256, (8, 1, 40, 44), dtype=torch.uint8, device="cuda")
    transform(x)  # warm up (lazy initialisation may synchronise)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = transform(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert out.device == x.device and out.shape == (8, 3, SIZE, SIZE)
    assert out.min() >= 0.0 and out.max() <= 1.0
