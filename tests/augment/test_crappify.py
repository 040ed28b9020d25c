"""BiaPy's crappify: shapes, range, resampling, noise level, determinism, parameter errors, no host syncs."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as nnf
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from innerssl.augment.crappify import (
    Crappify,
    add_gaussian_noise,
    crappify,
    down_up_sample,
    linear_resize_matrix,
    reduced_size,
    resize_linear,
)
from innerssl.errors import UserError

SHAPES = {2: (37, 50), 3: (13, 29, 31)}


def grid(shape: tuple[int, ...]) -> list[Tensor]:
    return list(torch.meshgrid(*[torch.arange(size) for size in shape], indexing="ij"))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("factor", [2, 4, 6])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shape_dtype_and_range(spatial_dims: int, channels: int, factor: int) -> None:
    images = torch.rand((2, channels, *SHAPES[spatial_dims]), generator=seeded(0))
    out = crappify(images, 0.5, factor, seeded(1))
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert (out - images).abs().mean() > 0.05  # it did degrade


def test_range_follows_each_images_own_maximum_or_the_given_ones() -> None:
    scales = torch.tensor([0.25, 1.0, 40.0])
    images = torch.rand((3, 2, 32, 32), generator=seeded(0)) * scales.view(3, 1, 1, 1)
    tops = images.amax(dim=(1, 2, 3))
    own = crappify(images, 0.5, 4, seeded(1), maximum=None)  # BiaPy: the image's max
    assert torch.all(own.amax(dim=(1, 2, 3)) <= tops) and torch.all(own >= 0)
    noisy = add_gaussian_noise(images, 0.5, None, seeded(1))
    assert torch.all(noisy.amax(dim=(1, 2, 3)) == tops)  # strong noise reaches each image's clip level
    given = crappify(images, 0.5, 4, seeded(1), maximum=scales * 2)
    assert torch.all(given.amax(dim=(1, 2, 3)) <= scales * 2)
    assert torch.all(given.amax(dim=(1, 2, 3)) > tops)  # clipped at 2x, not at the image's own maximum


def test_dtypes() -> None:
    assert crappify(torch.rand((1, 1, 16, 16), dtype=torch.float64), 0.1).dtype == torch.float64
    assert crappify(torch.randint(0, 2, (1, 1, 16, 16)), 0.1).dtype == torch.float32


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_resize_matrices_match_torchs_linear_interpolation(spatial_dims: int) -> None:
    images = torch.rand((2, 3, *SHAPES[spatial_dims]), generator=seeded(0))
    mode = "bilinear" if spatial_dims == 2 else "trilinear"
    for factor in (2, 4, 6):
        small = reduced_size(SHAPES[spatial_dims], factor)
        plain = nnf.interpolate(images, size=small, mode=mode, align_corners=False)
        torch.testing.assert_close(resize_linear(images, small, antialias=False), plain, rtol=0, atol=1e-5)
        if spatial_dims == 2:  # torch antialiases only 2D
            smooth = nnf.interpolate(images, size=small, mode=mode, align_corners=False, antialias=True)
            torch.testing.assert_close(resize_linear(images, small), smooth, rtol=0, atol=1e-5)
    up = (60, 70) if spatial_dims == 2 else (20, 40, 31)
    plain = nnf.interpolate(images, size=up, mode=mode, align_corners=False)
    torch.testing.assert_close(resize_linear(images, up), plain, rtol=0, atol=1e-5)
    assert torch.allclose(linear_resize_matrix(50, 18).sum(dim=1), torch.ones(18))


def test_reduced_size_is_one_over_sqrt_factor_per_axis() -> None:
    assert reduced_size((37, 50), 4) == (18, 25)
    assert reduced_size((13, 64, 64), 2) == (9, 45, 45)
    assert reduced_size((64, 1), 6) == (26, 1)


@pytest.mark.parametrize("factor", [2, 4, 6])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_down_up_sampling_keeps_a_smooth_ramp(spatial_dims: int, factor: int) -> None:
    shape = (64, 40) if spatial_dims == 2 else (32, 24, 20)
    step = 1 / (shape[0] - 1)
    ramp = (grid(shape)[0].float() * step)[None, None]
    error = (down_up_sample(ramp, factor) - ramp).abs() / step  # in units of the ramp's rise per pixel
    assert error.max() < 1 and error.mean() < 0.1  # only the outer rows err, where the sampling clamps
    assert error[:, :, 4:-4].max() < 0.05


@pytest.mark.parametrize("factor", [2, 4, 6])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_down_up_sampling_removes_a_checkerboard(spatial_dims: int, factor: int) -> None:
    shape = (64, 64) if spatial_dims == 2 else (24, 32, 40)
    board = (sum(grid(shape)) % 2).float()[None, None]
    assert down_up_sample(board, factor).std() < 0.2 * board.std()
    stripes = (grid(shape)[0] % 2).float()[None, None]  # along the first axis only: z in 3D is resampled too
    assert down_up_sample(stripes, factor).std() < 0.2 * stripes.std()


def test_without_antialiasing_factor_six_would_alias_the_checkerboard() -> None:
    """Why the down-sampling antialiases: the plain linear one keeps a quarter of the checkerboard's contrast."""
    board = (sum(grid((64, 64))) % 2).float()[None, None]
    assert down_up_sample(board, 6, antialias=False).std() > 0.2 * board.std()


@pytest.mark.parametrize(("level", "top", "maximum"), [(0.1, 1.0, 1.0), (0.2, 0.5, None), (0.05, 4.0, 4.0)])
def test_noise_std_is_noise_times_maximum(level: float, top: float, maximum: float | None) -> None:
    grey = torch.full((4, 1, 64, 64), top / 2)  # mid-grey: clipping at 2.5 sigma or more is rare
    grey[:, :, 0, 0] = top  # the image's own maximum (maximum=None) is `top` too
    noisy = add_gaussian_noise(grey, level, maximum, seeded(0))
    assert abs((noisy - grey).std() / (level * top) - 1) < 0.1
    assert abs((noisy - grey).mean()) < 0.02 * level * top


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_crappified_noise_is_the_noise_filtered_by_the_resampling(spatial_dims: int) -> None:
    """On a constant image the output's std is the noise std times the down/up map's gain for white noise."""
    shape = (96, 80) if spatial_dims == 2 else (24, 32, 40)
    grey = torch.full((4, 1, *shape), 0.5)
    level = 0.05
    out = crappify(grey, level, 4, seeded(0))
    gain = 1.0
    for size, small in zip(shape, reduced_size(shape, 4)):
        resample = linear_resize_matrix(small, size, antialias=False) @ linear_resize_matrix(size, small)
        gain *= resample.pow(2).sum(dim=1).mean().item()
    assert 0.1 < math.sqrt(gain) < 0.6  # the resampling does smooth the noise
    assert abs(out.std() / (level * math.sqrt(gain)) - 1) < 0.1


def test_crappify_is_noise_then_down_up_sampling() -> None:
    images = torch.rand((2, 3, 13, 29, 31), generator=seeded(0))
    expected = down_up_sample(add_gaussian_noise(images, 0.2, 1.0, seeded(5)), 6)
    torch.testing.assert_close(crappify(images, 0.2, 6, seeded(5)), expected, rtol=0, atol=1e-6)


def test_same_seed_same_output_other_seed_other_output() -> None:
    images = torch.rand((2, 1, 37, 50), generator=seeded(0))
    first = crappify(images, 0.2, 4, seeded(7))
    assert torch.equal(first, crappify(images, 0.2, 4, seeded(7)))
    assert not torch.equal(first, crappify(images, 0.2, 4, seeded(8)))


def test_crappify_class_draws_fresh_noise_every_call() -> None:
    degrade = Crappify(0.2, 2)
    images = torch.rand((2, 1, 37, 50), generator=seeded(0))
    generator = seeded(3)
    epoch_1, epoch_2 = degrade(images, generator), degrade(images, generator)
    assert not torch.equal(epoch_1, epoch_2)
    assert torch.equal(epoch_1, crappify(images, 0.2, 2, seeded(3)))
    assert torch.equal(Crappify(0.0, 2)(images), Crappify(0.0, 2)(images))  # no noise: only the resampling


@pytest.mark.parametrize(
    ("noise", "factor", "flag"),
    [
        (0.2, 3, "--crappify_resizing_factor"),
        (0.2, 8, "--crappify_resizing_factor"),
        (0.2, 1, "--crappify_resizing_factor"),
        (0.2, 4.5, "--crappify_resizing_factor"),
        (-0.1, 4, "--crappify_noise"),
        (float("nan"), 4, "--crappify_noise"),
        ("a lot", 4, "--crappify_noise"),
    ],
)
def test_invalid_settings_are_user_errors_naming_the_flag(noise: Any, factor: Any, flag: str) -> None:
    with pytest.raises(UserError, match=flag):
        Crappify(noise, factor)
    with pytest.raises(UserError, match=flag):
        crappify(torch.rand((1, 1, 8, 8)), noise, factor)


def test_images_without_two_or_three_spatial_axes_are_bugs() -> None:
    with pytest.raises(ValueError, match="expected images"):
        crappify(torch.rand((1, 8, 8)), 0.2, 4)


class _ForbidHostSync(TorchDispatchMode):
    """Fail on the operations that make a GPU wait for the host."""

    FORBIDDEN = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.item.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten.is_nonzero.default,
    }

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        if func in self.FORBIDDEN:
            raise AssertionError(f"host synchronisation: {func}")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("maximum", [1.0, None, torch.tensor([1.0, 2.0])])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_never_synchronises_with_the_host(spatial_dims: int, maximum: float | Tensor | None) -> None:
    images = torch.rand((2, 3, *SHAPES[spatial_dims]))
    with _ForbidHostSync(), pytest.raises(AssertionError, match="host synchronisation"):
        images.max().item()  # the check does catch a read-back
    with _ForbidHostSync():
        out = Crappify(0.2, 4, maximum)(images, seeded(0))
    assert out.shape == images.shape
