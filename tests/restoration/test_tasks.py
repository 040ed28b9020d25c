"""Every registered restoration pretext task, in 2D and 3D: what it trains on, how it evaluates whole images,
its baseline, and that its loss falls; plus each task's own settings (crappify's residual start, masking's masks)."""

from __future__ import annotations

import pytest
import torch

from innerssl.augment.crappify import crappify
from innerssl.errors import UserError
from innerssl.networks.dense import DenseNetworkSpec, create_dense_network
from innerssl.restoration import PRETEXT_TASKS, pretext_task
from innerssl.restoration.masking import mean_fill

NETWORK_OPTIONS = {
    "unet": {"channels": (8, 16), "strides": (2,)},
    "vit_mae": {
        "token_size": 8,
        "hidden_size": 48,
        "mlp_dim": 96,
        "num_layers": 1,
        "num_heads": 4,
        "decoder_hidden_size": 48,
        "decoder_mlp_dim": 96,
        "decoder_num_layers": 1,
        "decoder_num_heads": 4,
    },
    "vit_autoenc": {"token_size": 4, "hidden_size": 48, "mlp_dim": 96, "num_layers": 1, "num_heads": 4},
}
PATCH = {2: (16, 16), 3: (16, 16, 16)}


def network_for(task_name: str, spatial_dims: int, channels: int = 1):
    name = pretext_task(task_name).default_network
    spec = DenseNetworkSpec(name, spatial_dims, channels, channels, PATCH[spatial_dims], NETWORK_OPTIONS[name])
    return create_dense_network(spec)


def smooth_images(count: int, channels: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """Images with structure a network can learn to restore (random noise cannot be restored from noise)."""
    coarse = torch.rand(count, channels, *(4,) * len(spatial))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=spatial, mode=mode, align_corners=False)


def tiling(image, network):
    """Whole-image inference for images of exactly one patch (the module tiles larger ones)."""
    return network(image[None])[0]


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("task_name", PRETEXT_TASKS.names())
def test_every_task_trains_and_restores_in_2d_and_3d(task_name, spatial_dims):
    torch.manual_seed(0)
    task = pretext_task(task_name)()
    network = network_for(task_name, spatial_dims, channels=2)
    task.prepare_network(network)
    images = smooth_images(3, 2, PATCH[spatial_dims])
    prediction, target, mask = task.training_pair(network, images, None)
    assert prediction.shape == images.shape and torch.equal(target, images)
    assert mask is None or mask.shape == (3, 1, *PATCH[spatial_dims])
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    fixed = task.training_pair(network, images, None, generator)[2]  # masking: one mask, so the loss compares
    losses = []
    for _ in range(40):
        prediction, target, mask = task.training_pair(network, images, None, torch.Generator().manual_seed(1))
        loss = task.objective(prediction, target, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert fixed is None or torch.equal(fixed, mask)
    assert losses[-1] < 0.85 * losses[0], losses

    network.eval()
    image = images[0]
    first = task.restore(network, image, None, 5, tiling)
    again = task.restore(network, image, None, 5, tiling)
    other = task.restore(network, image, None, 6, tiling)
    assert first.restored.shape == image.shape and torch.equal(first.original, image)
    assert torch.equal(first.network_input, again.network_input)  # the same degradation at every evaluation
    assert not torch.equal(first.network_input, other.network_input)  # another image index, another draw


def test_crappify_baseline_is_the_degraded_input_and_the_residual_start_is_the_identity():
    task = pretext_task("crappify")()
    network = network_for("crappify", 2)
    task.prepare_network(network)
    image = torch.rand(1, 16, 16)
    result = task.restore(network, image, None, 0, tiling)
    assert torch.equal(result.baseline, result.network_input)
    # The zeroed output layer: before training the restoration is exactly the degraded input (the baseline).
    assert torch.allclose(result.restored, result.network_input)
    generator = torch.Generator().manual_seed(1234 * 1_000_003)
    expected = crappify(image[None], 0.2, 4, generator, maximum=None)[0]
    assert torch.equal(result.network_input, expected)


def test_crappify_with_stored_copies_trains_on_them():
    task = pretext_task("crappify")(residual=False)
    network = network_for("crappify", 2)
    copies, originals = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    prediction, target, _mask = task.training_pair(network, copies, originals)
    assert torch.equal(target, originals)
    assert torch.allclose(prediction, network(copies))


@pytest.mark.parametrize("bad", [{"resizing_factor": 3}, {"loss": "huber"}])
def test_crappify_refuses_settings_biapy_does_not_have(bad):
    with pytest.raises(UserError, match="--crappify_"):
        pretext_task("crappify")(**bad)


def test_crappify_refuses_zero_mean_data():
    with pytest.raises(UserError, match="--normalisation"):
        pretext_task("crappify")().check("zero_mean_unit_variance", "unet", token_network=False)


def test_tasks_refuse_the_other_kind_of_network():
    with pytest.raises(UserError, match="--network=vit_mae"):
        pretext_task("masking")().check("div", "unet", token_network=False)
    with pytest.raises(UserError, match="masking"):
        pretext_task("crappify")().check("div", "vit_mae", token_network=True)


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("ratio", [0.5, 0.75])
def test_masking_restores_whole_images_with_the_ratio_and_counts_masked_pixels_only(spatial_dims, ratio):
    torch.manual_seed(0)
    task = pretext_task("masking")(mask_type="random", mask_ratio=ratio)
    network = network_for("masking", spatial_dims).eval()
    whole = (1, 32, 32) if spatial_dims == 2 else (1, 16, 32, 16)  # whole tiles of 2^d tokens of 8 px
    image = torch.rand(whole)
    result = task.restore(network, image, None, 0, tiling)
    assert result.mask is not None and result.mask.shape == (1, *whole[1:])
    assert result.mask.float().mean().item() == pytest.approx(round(ratio * 2**spatial_dims) / 2**spatial_dims)
    visible = (~result.mask).expand_as(image)
    assert torch.equal(result.restored[visible], image[visible])
    assert result.reconstruction is not None
    masked = result.mask.expand_as(image)
    assert torch.allclose(result.baseline[masked], image[visible].mean().expand(int(masked.sum())))
    # Not a whole number of tiles: padded to whole tiles and cropped back.
    odd = (1, 20, 24) if spatial_dims == 2 else (1, 16, 20, 18)
    cropped = task.restore(network, torch.rand(odd), None, 0, tiling)
    assert cropped.restored.shape == odd and cropped.mask is not None and cropped.mask.shape == (1, *odd[1:])


def test_masking_grid_is_the_checkerboard_of_tokens():
    task = pretext_task("masking")(mask_type="grid")
    network = network_for("masking", 2).eval()
    result = task.restore(network, torch.rand(1, 16, 16), None, 0, tiling)
    assert result.mask is not None
    tokens = result.mask[0, ::8, ::8].int()
    assert tokens.tolist() == [[0, 1], [1, 0]]
    assert task.restore(network, torch.rand(1, 16, 16), None, 9, tiling).mask.equal(result.mask)


def test_mean_fill_uses_the_visible_pixels_of_each_channel():
    image = torch.stack([torch.full((4, 4), 2.0), torch.full((4, 4), 5.0)])
    image[:, :2] = 100.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :2] = True
    filled = mean_fill(image, mask)
    assert filled[0, :2].eq(2.0).all() and filled[1, :2].eq(5.0).all()
    assert torch.equal(filled[:, 2:], image[:, 2:])
