"""Tiled whole-image inference: placement, reflection, blending, round trips, networks, errors; random patches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from innerssl.data.tiling import (
    TilingPlan,
    extract_patches,
    predict_by_tiles,
    random_patch_origins,
    reflect_indices,
    reflect_pad,
)
from innerssl.errors import UserError

# (image spatial shape, patch, overlap, padding): odd sizes, several tiles per axis, an image smaller than the patch.
CASES = {
    "2d": ((37, 50), (16, 16), (0.5, 0.25), (2, 3)),
    "2d_smaller_than_patch": ((37, 50), (64, 16), 0.5, 4),
    "2d_no_overlap_no_padding": ((37, 50), (8, 12), 0.0, 0),
    "2d_high_overlap": ((21, 19), (10, 8), 0.9, 1),
    "3d": ((13, 29, 31), (8, 12, 12), (0.5, 0.5, 0.3), (1, 2, 2)),
    "3d_smaller_than_patch": ((13, 29, 31), (20, 12, 40), 0.5, (2, 1, 5)),
}


def coordinates(shape: tuple[int, ...]) -> Tensor:
    """A (D, *shape) image whose channel d is each pixel's coordinate along axis d."""
    axes = torch.meshgrid(*[torch.arange(size, dtype=torch.float32) for size in shape], indexing="ij")
    return torch.stack(axes)


@pytest.mark.parametrize("channels", [1, 2, 5])
@pytest.mark.parametrize("case", CASES.keys())
def test_merge_of_split_gives_the_image_back(case: str, channels: int) -> None:
    shape, patch, overlap, padding = CASES[case]
    plan = TilingPlan(shape, patch, overlap, padding)
    image = torch.rand((channels, *shape), generator=torch.Generator().manual_seed(0))
    tiles = plan.split(image)
    assert tiles.shape == (plan.num_tiles, channels, *plan.patch_size)
    assert plan.num_tiles > 1
    merged = plan.merge(tiles)
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged, image, rtol=0, atol=1e-6)


def test_round_trip_is_bit_exact_where_one_tile_covers_each_pixel() -> None:
    plan = TilingPlan((37, 50), (8, 12), 0.0, 0)  # the last tile overlaps its neighbour, elsewhere weight 1
    image = torch.randn((3, 37, 50), generator=torch.Generator().manual_seed(1)) * 1000
    merged = plan.merge(plan.split(image))
    assert torch.equal(merged[:, :32, :48], image[:, :32, :48])
    torch.testing.assert_close(merged, image, rtol=1e-6, atol=0)


def test_float64_tiles_merge_in_float64() -> None:
    plan = TilingPlan((13, 29, 31), (8, 12, 12), 0.5, 1)
    image = torch.rand((2, 13, 29, 31), dtype=torch.float64)
    merged = plan.merge(plan.split(image))
    assert merged.dtype == torch.float64
    torch.testing.assert_close(merged, image, rtol=0, atol=1e-12)


def test_tiles_are_where_the_plan_says() -> None:
    """Interior tiles of a coordinate image hold their origin's coordinates; padded ones hold reflections."""
    shape = (37, 50)
    plan = TilingPlan(shape, (16, 16), 0.5, 2)
    tiles = plan.split(coordinates(shape))
    origins = plan.tile_origins()
    assert len(origins) == plan.num_tiles == tiles.shape[0]
    for tile, origin in zip(tiles, origins):
        for axis, (start, side, size) in enumerate(zip(origin, plan.patch_size, shape)):
            expected = reflect_indices(size, max(-start, 0), max(start + side - size, 0))[max(start, 0) :]
            line = tile[axis].select(1 - axis, 0)  # coordinate `axis` along axis `axis`
            assert torch.equal(line, expected[:side].float()), (origin, axis)


def test_core_starts_cover_the_image_and_end_at_its_end() -> None:
    plan = TilingPlan((100, 7), (32, 16), 0.5, (4, 2))  # cores 24 and 12; axis 1 is shorter than its core
    assert plan.core_size == (24, 12)
    assert plan.steps == (12, 6)
    assert plan.grid == (8, 1)
    rows = sorted({origin[0] for origin in plan.tile_origins()})
    assert [row + 4 for row in rows] == [0, 12, 24, 36, 48, 60, 72, 76]  # last core ends at pixel 99
    assert {origin[1] for origin in plan.tile_origins()} == {-2}
    assert plan.padded_shape == (108, 7 + 2 + 2 + 5)


class _AbsoluteCoordinates:
    """A fake network that knows each tile's place: it outputs the absolute coordinates of the tile's pixels, so a
    tile merged at the wrong offset shows up as a wrong value (the input is ignored)."""

    def __init__(self, plan: TilingPlan) -> None:
        self.origins = plan.tile_origins()
        self.patch = plan.patch_size
        self.seen = 0
        self.batch_sizes: list[int] = []

    def __call__(self, tiles: Tensor) -> Tensor:
        outputs = []
        for origin in self.origins[self.seen : self.seen + tiles.shape[0]]:
            grid = coordinates(self.patch) + torch.tensor(origin, dtype=torch.float32).view(-1, *[1] * len(origin))
            outputs.append(grid)
        self.seen += tiles.shape[0]
        self.batch_sizes.append(tiles.shape[0])
        return torch.stack(outputs)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
@pytest.mark.parametrize("case", ["2d", "2d_smaller_than_patch", "3d", "3d_smaller_than_patch"])
def test_position_dependent_outputs_merge_to_their_positions(case: str, batch_size: int) -> None:
    shape, patch, overlap, padding = CASES[case]
    plan = TilingPlan(shape, patch, overlap, padding)
    network = _AbsoluteCoordinates(plan)
    merged = predict_by_tiles(torch.zeros((1, *shape)), network, plan, batch_size)
    assert merged.shape == (len(shape), *shape)  # C_out (the coordinate channels) differs from C_in = 1
    torch.testing.assert_close(merged, coordinates(shape), rtol=0, atol=1e-5)
    assert network.seen == plan.num_tiles
    assert max(network.batch_sizes) == min(batch_size, plan.num_tiles)


@pytest.mark.parametrize("case", ["2d", "3d_smaller_than_patch"])
def test_identity_network_gives_the_input_back(case: str) -> None:
    shape, patch, overlap, padding = CASES[case]
    plan = TilingPlan(shape, patch, overlap, padding)
    image = torch.rand((2, *shape))
    torch.testing.assert_close(predict_by_tiles(image, nn.Identity(), plan, 3), image, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", ["2d", "3d"])
def test_pointwise_network_to_other_channel_count_matches_whole_image(case: str) -> None:
    shape, patch, overlap, padding = CASES[case]
    torch.manual_seed(0)
    conv = (nn.Conv2d if len(shape) == 2 else nn.Conv3d)(2, 5, kernel_size=1)
    plan = TilingPlan(shape, patch, overlap, padding)
    image = torch.rand((2, *shape))
    merged = predict_by_tiles(image, conv, plan, batch_size=5)
    assert merged.shape == (5, *shape)
    assert not merged.requires_grad  # run under no_grad
    with torch.no_grad():
        whole = conv(image[None])[0]
    torch.testing.assert_close(merged, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_padding_gives_tiles_the_context_of_the_whole_image(spatial_dims: int) -> None:
    """A 3-wide convolution with zero padding, by tiles with --test_padding 1, equals the convolution of the whole
    reflection-padded image; without the padding, the tile edges show."""
    shape = (37, 50) if spatial_dims == 2 else (13, 29, 31)
    patch = (12,) * spatial_dims
    torch.manual_seed(0)
    conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(1, 2, kernel_size=3, padding=1)
    image = torch.rand((1, *shape))
    with torch.no_grad():
        whole = conv(reflect_pad(image, [1] * spatial_dims, [1] * spatial_dims)[None])[0]
        whole = whole[(slice(None), *[slice(1, -1)] * spatial_dims)]
    padded = predict_by_tiles(image, conv, TilingPlan(shape, patch, 0.25, 1), batch_size=8)
    torch.testing.assert_close(padded, whole, rtol=0, atol=1e-5)
    unpadded = predict_by_tiles(image, conv, TilingPlan(shape, patch, 0.25, 0), batch_size=8)
    assert (unpadded - whole).abs().max() > 1e-2


def test_blend_weights_are_zero_in_the_padding_one_in_the_centre_and_sum_to_one_across_overlaps() -> None:
    plan = TilingPlan((100, 100), (20, 12), (0.25, 0.0), (2, 1))  # cores 16 (step 12) and 10 (step 10)
    window = plan.blend_weights()
    assert window.shape == (20, 12)
    rows, cols = window[:, 6], window[10, :]
    assert torch.all(rows[:2] == 0) and torch.all(rows[-2:] == 0)
    assert torch.all(rows[2:18] > 0) and torch.all(rows[6:14] == 1)
    assert torch.equal(cols, torch.tensor([0.0] + [1.0] * 10 + [0.0]))  # no overlap: a flat window
    core = rows[2:18]
    torch.testing.assert_close(core[12:] + core[:4], torch.ones(4), rtol=0, atol=1e-6)  # the neighbour 12 px on
    assert torch.equal(window, rows[:, None] * cols[None, :])  # separable


def test_half_overlap_blends_with_triangles_that_sum_to_one() -> None:
    core = TilingPlan((100, 100), 16, (0.5, 0.0), 0).blend_weights()[:, 0]  # flat along axis 1
    assert torch.all(core > 0) and core.max() < 1
    torch.testing.assert_close(core[8:] + core[:8], torch.ones(8), rtol=0, atol=1e-6)


def test_reflect_indices_match_numpy_for_pads_wider_than_the_axis() -> None:
    for size, before, after in [(5, 2, 3), (3, 7, 11), (1, 4, 2), (2, 5, 0)]:
        expected = np.pad(np.arange(size), (before, after), mode="reflect")
        assert reflect_indices(size, before, after).tolist() == expected.tolist()


def test_reflect_pad_matches_torch_where_torch_allows_it() -> None:
    image = torch.rand((2, 6, 7, 8))
    torch.testing.assert_close(
        reflect_pad(image, [1, 2, 3], [3, 0, 2]), nnf.pad(image[None], (3, 2, 2, 0, 1, 3), mode="reflect")[0]
    )


INVALID: dict[str, tuple[Callable[[], object], str]] = {
    "overlap_one": (lambda: TilingPlan((37, 50), (16, 16), 1.0, 0), "--test_overlap"),
    "overlap_negative": (lambda: TilingPlan((37, 50), (16, 16), (0.5, -0.1), 0), "--test_overlap"),
    "overlap_axes": (lambda: TilingPlan((37, 50), (16, 16), (0.5, 0.5, 0.5), 0), "--test_overlap"),
    "padding_half_patch": (lambda: TilingPlan((37, 50), (16, 16), 0.5, (2, 8)), "--test_padding"),
    "padding_negative": (lambda: TilingPlan((37, 50), (16, 16), 0.5, -1), "--test_padding"),
    "padding_axes": (lambda: TilingPlan((13, 29, 31), (8, 8, 8), 0.5, (1, 1)), "--test_padding"),
    "patch_zero": (lambda: TilingPlan((37, 50), (0, 16)), "--patch_size"),
    "patch_float": (lambda: TilingPlan((37, 50), (16.5, 16)), "--patch_size"),
    "patch_axes_2d_for_3d": (lambda: TilingPlan((13, 29, 31), (16, 16)), "--patch_size"),
    "patch_axes_3d_for_2d": (lambda: TilingPlan((37, 50), (8, 16, 16)), "--patch_size"),
    "sampler_patch": (lambda: random_patch_origins((37, 50), (16, -1), 3), "--patch_size"),
}


@pytest.mark.parametrize("name", INVALID.keys())
def test_invalid_settings_are_user_errors_naming_the_flag(name: str) -> None:
    make, flag = INVALID[name]
    with pytest.raises(UserError, match=flag) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_scalar_settings_apply_to_every_axis() -> None:
    plan = TilingPlan((13, 29, 31), 8, 0.5, 1)
    assert (plan.patch_size, plan.overlap, plan.padding) == ((8, 8, 8), (0.5, 0.5, 0.5), (1, 1, 1))
    assert dataclasses.replace(plan, image_shape=(9, 9, 9)).patch_size == (8, 8, 8)


def test_wrong_shapes_are_bugs() -> None:
    plan = TilingPlan((37, 50), (16, 16), 0.5, 2)
    with pytest.raises(ValueError, match="expected an image"):
        plan.split(torch.zeros((1, 37, 51)))
    tiles = plan.split(torch.zeros((1, 37, 50)))
    with pytest.raises(ValueError, match="expected tiles"):
        plan.merge(tiles[1:])
    with pytest.raises(ValueError, match="expected tiles"):
        predict_by_tiles(torch.zeros((1, 37, 50)), lambda batch: batch[..., :-1], plan)


def test_random_patch_origins_are_uniform_over_valid_positions() -> None:
    origins = random_patch_origins((10, 7, 5), (4, 4, 5), 21000, torch.Generator().manual_seed(0))
    assert origins.shape == (21000, 3) and origins.dtype == torch.int64
    for axis, positions in enumerate((7, 4, 1)):
        counts = torch.bincount(origins[:, axis], minlength=positions)
        assert counts.numel() == positions  # never past the last valid origin
        assert (counts - 21000 / positions).abs().max() < 0.05 * 21000 / positions


def test_random_patch_origins_are_reproducible_from_the_generator() -> None:
    first = random_patch_origins((40, 40), (8, 8), 50, torch.Generator().manual_seed(3))
    again = random_patch_origins((40, 40), (8, 8), 50, torch.Generator().manual_seed(3))
    other = random_patch_origins((40, 40), (8, 8), 50, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_extract_patches_slices_the_image_and_reflects_short_axes() -> None:
    image = torch.rand((2, 6, 20, 9))
    origins = random_patch_origins((6, 20, 9), (8, 5, 4), 7, torch.Generator().manual_seed(1))
    assert torch.all(origins[:, 0] == 0)
    patches = extract_patches(image, origins, (8, 5, 4))
    assert patches.shape == (7, 2, 8, 5, 4)
    reflected = torch.from_numpy(np.pad(image.numpy(), ((0, 0), (0, 2), (0, 0), (0, 0)), mode="reflect"))
    for patch, (z, y, x) in zip(patches, origins.tolist()):
        assert torch.equal(patch, reflected[:, z : z + 8, y : y + 5, x : x + 4])
    with pytest.raises(ValueError, match="patch origins"):
        extract_patches(image, [[0, 16, 0]], (8, 5, 4))
