"""Token masks, patch layout and the masked-autoencoder ViT taking an explicit mask, in 2D and 3D."""

import math

import pytest
import torch

from innerssl.errors import UserError
from innerssl.networks.dense import DenseNetworkSpec, create_dense_network
from innerssl.networks.masked_vit import (
    grid_token_mask,
    mask_to_pixels,
    patchify,
    random_token_mask,
    token_grid,
    unpatchify,
)

TINY_MAE = {
    "hidden_size": 48,
    "mlp_dim": 64,
    "num_layers": 1,
    "num_heads": 4,
    "decoder_hidden_size": 48,
    "decoder_mlp_dim": 64,
    "decoder_num_layers": 1,
    "decoder_num_heads": 4,
}


def tiny_mae(spatial_dims: int, in_channels: int = 1, out_channels: int = 1, token_size: int = 8):
    torch.manual_seed(0)
    patch = (32, 32) if spatial_dims == 2 else (16, 16, 16)
    options = {**TINY_MAE, "token_size": token_size}
    return create_dense_network(DenseNetworkSpec("vit_mae", spatial_dims, in_channels, out_channels, patch, options))


@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_random_masks_mask_exactly_round_ratio_tokens(ratio: float) -> None:
    mask = random_token_mask(5, (4, 4), ratio)
    assert mask.dtype == torch.bool and mask.shape == (5, 16)
    assert mask.sum(dim=1).tolist() == [round(ratio * 16)] * 5


def test_random_masks_keep_one_token_of_each_kind_and_reject_bad_settings() -> None:
    assert random_token_mask(2, (2, 2), 0.01).sum(dim=1).tolist() == [1, 1]
    assert random_token_mask(2, (2, 2), 0.99).sum(dim=1).tolist() == [3, 3]
    with pytest.raises(UserError, match="--mae_mask_ratio"):
        random_token_mask(2, (2, 2), 1.0)
    with pytest.raises(UserError, match="--mae_token_size"):
        random_token_mask(2, (1, 1), 0.5)


def test_random_masks_are_reproducible_with_a_generator() -> None:
    first = random_token_mask(4, (4, 4, 2), 0.75, generator=torch.Generator().manual_seed(3))
    again = random_token_mask(4, (4, 4, 2), 0.75, generator=torch.Generator().manual_seed(3))
    other = random_token_mask(4, (4, 4, 2), 0.75, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len({tuple(row.tolist()) for row in first}) > 1  # each image draws its own mask


def test_grid_masks_are_a_checkerboard_in_2d_and_3d() -> None:
    expected_2d = torch.tensor([[False, True], [True, False]]).flatten()
    assert torch.equal(grid_token_mask(3, (2, 2)), expected_2d.expand(3, -1))
    expected_3d = torch.tensor(
        [[[False, True], [True, False]], [[True, False], [False, True]]]  # masked where i + j + k is odd
    ).flatten()
    assert torch.equal(grid_token_mask(2, (2, 2, 2)), expected_3d.expand(2, -1))
    assert grid_token_mask(1, (3, 3)).sum() == 4  # floor(9 / 2)
    assert grid_token_mask(1, (4, 6)).sum() == 12


def test_token_grid_names_the_flags_when_the_patch_does_not_split() -> None:
    assert token_grid((32, 48), 16) == (2, 3)
    assert token_grid((16, 16, 8), (8, 8, 4)) == (2, 2, 2)
    with pytest.raises(UserError, match="--patch_size.*--mae_token_size"):
        token_grid((32, 40), 16)


@pytest.mark.parametrize(
    ("shape", "token"), [((2, 3, 8, 12), (4, 4)), ((2, 2, 8, 4, 6), (4, 2, 3)), ((1, 1, 8, 8, 8), 4)]
)
def test_patchify_and_unpatchify_are_inverses(shape: tuple[int, ...], token) -> None:
    images = torch.rand(shape)
    patches = patchify(images, token)
    tokens = (token,) * (len(shape) - 2) if isinstance(token, int) else token
    assert patches.shape == (shape[0], math.prod(token_grid(shape[2:], tokens)), math.prod(tokens) * shape[1])
    assert torch.equal(unpatchify(patches, shape[2:], token, shape[1]), images)


def test_the_patch_layout_is_row_major_tokens_with_channels_last() -> None:
    images = torch.rand(1, 2, 4, 6)
    patches = patchify(images, 2)
    # Token 1 is the second token of the first row; its vector is (row, column, channel) row-major.
    assert torch.equal(patches[0, 1], images[0, :, 0:2, 2:4].permute(1, 2, 0).flatten())
    assert torch.equal(patches[0, 3], images[0, :, 2:4, 0:2].permute(1, 2, 0).flatten())


def test_mask_to_pixels_marks_the_masked_tokens_voxels() -> None:
    mask = grid_token_mask(2, (2, 3))
    pixels = mask_to_pixels(mask, (8, 12), 4)
    assert pixels.shape == (2, 1, 8, 12) and pixels.dtype == torch.bool
    assert pixels.sum() == mask.sum() * 16
    assert pixels[0, 0, :4, 4:8].all() and not pixels[0, 0, :4, :4].any()
    pixels_3d = mask_to_pixels(random_token_mask(1, (2, 2, 2), 0.5), (8, 8, 4), (4, 4, 2))
    assert pixels_3d.shape == (1, 1, 8, 8, 4) and pixels_3d.sum() == 4 * 32


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_masked_vit_reconstructs_every_token_from_the_visible_ones(spatial_dims: int) -> None:
    network = tiny_mae(spatial_dims, in_channels=2, out_channels=2)
    images = torch.rand(2, 2, *network.spec.patch_size)
    grid = token_grid(network.spec.patch_size, 8)
    mask = random_token_mask(2, grid, 0.75, generator=torch.Generator().manual_seed(0))
    patches, returned = network(images, mask)
    assert returned is mask
    assert patches.shape == (2, math.prod(grid), 8**spatial_dims * 2)
    assert network.reconstruct(images, mask).shape == images.shape
    # Without a mask nothing is masked or drawn: the dense contract, deterministic.
    assert network(images).shape == images.shape
    assert torch.equal(network(images), network(images))
    assert torch.equal(network(images), network.reconstruct(images, torch.zeros_like(mask)))


def test_masked_tokens_are_not_seen() -> None:
    network = tiny_mae(2).eval()
    images = torch.rand(1, 1, 32, 32)
    mask = grid_token_mask(1, (4, 4))  # token 1 (rows 0:8, columns 8:16) is masked, token 0 visible
    changed_masked = images.clone()
    changed_masked[..., 0:8, 8:16] = torch.rand(8, 8)
    changed_visible = images.clone()
    changed_visible[..., 0:8, 0:8] = torch.rand(8, 8)
    with torch.no_grad():
        reference, _mask = network(images, mask)
        assert torch.allclose(network(changed_masked, mask)[0], reference, atol=1e-6)
        assert not torch.allclose(network(changed_visible, mask)[0], reference, atol=1e-3)


def test_a_mask_with_unequal_visible_counts_is_refused() -> None:
    network = tiny_mae(2)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :4] = True
    with pytest.raises(ValueError, match="same number of visible tokens"):
        network(torch.rand(2, 1, 32, 32), mask)
    with pytest.raises(ValueError, match="bool"):
        network(torch.rand(2, 1, 32, 32), mask.int())


def test_vit_mae_is_a_masked_vit_with_vit_keys_and_other_output_channels() -> None:
    from innerssl.networks.masked_vit import MaskedViT

    network = tiny_mae(2, in_channels=1, out_channels=3)
    assert isinstance(network, MaskedViT)
    assert network(torch.rand(1, 1, 32, 32)).shape == (1, 3, 32, 32)
    keys = set(network.state_dict())
    assert {"norm.weight", "blocks.0.attn.qkv.weight", "patch_embedding.patch_embeddings.weight"} <= keys
    assert "blocks.1.weight" not in keys  # the encoder's LayerNorm is `norm`, as in MONAI's ViT
    with pytest.raises(UserError, match="--mae_token_size"):
        tiny_mae(2, token_size=12)
