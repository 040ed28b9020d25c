"""MONAI's self-supervised recipe (ViTAutoEnc, in/out-painting, local pixel shuffle, L1 + contrastive): the views,
the hole scaling, the loss, evaluation, the ViT's move into UNETR, and a pretraining -> segmentation run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from innerssl.errors import UserError
from innerssl.networks.dense import DenseNetworkSpec, create_dense_network
from innerssl.networks.transfer import transfer_weights
from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.restoration import pretext_task
from innerssl.restoration.vit_autoenc import HoleSizes, ViTAutoEncSSL
from tests.conftest import SHARED_DATA

TINY_VIT = {"hidden_size": 48, "mlp_dim": 64, "num_layers": 1, "num_heads": 4}


def autoenc(spatial_dims: int, patch: int = 16, token_size: int = 4, channels: int = 1) -> nn.Module:
    spec = DenseNetworkSpec("vit_autoenc", spatial_dims, channels, channels, (patch,) * spatial_dims)
    return create_dense_network(
        DenseNetworkSpec(**{**spec.__dict__, "options": {**TINY_VIT, "token_size": token_size}})
    )


def smooth_images(count: int, spatial: tuple[int, ...]) -> torch.Tensor:
    """Images a network can learn to restore (noise cannot be restored from noise)."""
    coarse = torch.rand(count, 1, *(4,) * len(spatial), generator=torch.Generator().manual_seed(0))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    return nn.functional.interpolate(coarse, size=spatial, mode=mode, align_corners=False)


def one_patch(image: torch.Tensor, network: nn.Module) -> torch.Tensor:
    return network(image[None])[0]


def test_the_task_is_registered_with_the_tutorial_defaults() -> None:
    task = pretext_task("vit_autoenc")()
    assert isinstance(task, ViTAutoEncSSL) and task.default_network == "vit_autoenc"
    arguments = task.arguments()
    assert arguments["holes"] == 6 and arguments["outpainting_max_spatial_size"] == 64
    assert arguments["shuffle_prob"] == 0.8 and arguments["temperature"] == 0.05
    assert set(arguments) == set(ViTAutoEncSSL.parameter_docs)


def test_two_views_differ_from_each_other_and_the_original_and_repeat_with_the_seed() -> None:
    task = ViTAutoEncSSL()
    images = smooth_images(3, (32, 32, 32))
    first, second = task.two_views(images, torch.Generator().manual_seed(7))
    assert first.shape == second.shape == images.shape
    for one, two, original in zip(first, second, images):
        assert not torch.equal(one, original) and not torch.equal(two, original)
        assert not torch.equal(one, two)  # separate draws per view (MONAI tutorials#467)
    again = task.two_views(images, torch.Generator().manual_seed(7))
    assert torch.equal(again[0], first) and torch.equal(again[1], second)
    other = task.two_views(images, torch.Generator().manual_seed(8))
    assert not torch.equal(other[0], first)


def test_hole_sizes_scale_with_the_patch() -> None:
    task = ViTAutoEncSSL()
    assert task.hole_sizes((96, 96, 96)) == HoleSizes(5, 32, 20, 64, 8)  # the tutorial's ROI: its sizes
    assert task.hole_sizes((32, 48, 32)) == HoleSizes(2, 11, 7, 21, 3)  # about a third, by the smallest side
    assert task.hole_sizes((4, 4)).spatial_size == 1  # at least one voxel
    # One fixed-size inpainting hole: its side is the scaled one.
    fixed = ViTAutoEncSSL(holes=1, spatial_size=30, max_spatial_size=30, outpainting_prob=0.0, shuffle_prob=0.0)
    image = torch.arange(32**3, dtype=torch.float32).reshape(1, 32, 32, 32)
    changed = (fixed.first_views(image[None], torch.Generator().manual_seed(0))[0] != image)[0]
    sides = [int(changed.any(dim=tuple(d for d in range(3) if d != axis)).sum()) for axis in range(3)]
    assert sides == [10, 10, 10]


def test_the_loss_is_l1_plus_contrastive_times_l1_of_the_same_views() -> None:
    from monai.losses import ContrastiveLoss

    task = ViTAutoEncSSL()
    network = autoenc(3).eval()
    images = smooth_images(2, (16, 16, 16))
    torch.manual_seed(3)
    loss = task.training_loss(network, images, None)
    torch.manual_seed(3)
    first, second = task.two_views(images)
    with torch.no_grad():
        one, two = network(first), network(second)
    l1 = nn.functional.l1_loss(one, images)
    cl = ContrastiveLoss(temperature=0.05)(one.flatten(1), two.flatten(1))
    assert torch.allclose(loss.detach(), l1 + cl * l1)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_loss_falls_on_smooth_images(spatial_dims: int) -> None:
    torch.manual_seed(0)
    task = ViTAutoEncSSL()
    network = autoenc(spatial_dims)
    images = smooth_images(4, (16,) * spatial_dims)

    def held_out() -> float:
        with torch.no_grad():
            prediction, target, mask = task.training_pair(network, images, None, torch.Generator().manual_seed(1))
            return float(task.objective(prediction, target, mask))

    before = held_out()
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(30):
        loss = task.training_loss(network, images, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert held_out() < 0.7 * before


def test_restore_is_the_same_for_an_index_and_the_baseline_is_the_damaged_view() -> None:
    task = ViTAutoEncSSL()
    network = autoenc(3).eval()
    image = smooth_images(1, (16, 16, 16))[0]
    first = task.restore(network, image, None, 5, one_patch)
    again = task.restore(network, image, None, 5, one_patch)
    other = task.restore(network, image, None, 6, one_patch)
    assert torch.equal(first.network_input, again.network_input) and torch.equal(first.restored, again.restored)
    assert not torch.equal(first.network_input, other.network_input)
    assert torch.equal(first.baseline, first.network_input) and not torch.equal(first.network_input, image)
    assert first.restored.shape == image.shape and first.mask is None
    shown, originals = task.preview_inputs(network, image[None], None, torch.Generator().manual_seed(0))
    assert shown.shape == originals.shape == (1, *image.shape)


def test_settings_that_cannot_work_are_user_errors() -> None:
    with pytest.raises(UserError, match="--autoenc_max_spatial_size"):
        ViTAutoEncSSL(spatial_size=10, max_spatial_size=5)
    with pytest.raises(UserError, match="--autoenc_temperature"):
        ViTAutoEncSSL(temperature=0.0)
    with pytest.raises(UserError, match="--patch_size"):  # unscaled 20-64 voxel windows on a 16 voxel patch
        ViTAutoEncSSL(reference_roi=16).prepare_network(autoenc(2))
    with pytest.raises(UserError, match="token_size"):  # the decoder up-samples twice by sqrt(token)
        autoenc(2, token_size=8)
    with pytest.raises(UserError, match="--patch_size"):
        autoenc(3, patch=20, token_size=16)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_autoencoder_vit_lands_in_a_unetr_vit(spatial_dims: int) -> None:
    source = autoenc(spatial_dims, patch=32, token_size=16)
    assert source(torch.rand(2, 1, *(32,) * spatial_dims)).shape == (2, 1, *(32,) * spatial_dims)
    unetr = create_dense_network(
        DenseNetworkSpec("unetr", spatial_dims, 1, 3, (32,) * spatial_dims, {**TINY_VIT, "feature_size": 8})
    )
    state = {"network." + key: value for key, value in source.state_dict().items()}
    report = transfer_weights(
        unetr, state, source_prefix="network.", target_prefix="vit.", only_keys=lambda key: key.startswith("vit.")
    )
    vit_keys = [key for key in unetr.state_dict() if key.startswith("vit.")]
    assert sorted(report.loaded) == sorted(vit_keys) and not report.shape_mismatch
    target = unetr.state_dict()
    for key in vit_keys:
        assert torch.equal(target[key], source.state_dict()[key.removeprefix("vit.")]), key
    assert all(key.startswith("network.conv3d_transpose") for key in report.unused)  # only the decoder is left


def test_pretraining_then_segmentation_from_its_checkpoint(tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)")
    from innerssl.runner import main

    sample = SHARED_DATA / "hippocampus-sample"
    dataset = tmp_path / "hippocampus"
    for folder in ("imagesTr", "labelsTr"):
        (dataset / folder).mkdir(parents=True)
        for path in sorted((sample / "imagesTr").glob("*.nii.gz"))[:6]:
            shutil.copy(sample / folder / path.name, dataset / folder / path.name)
    common = [
        f"--local_dataset={dataset}",
        f"--output_dir={tmp_path / 'outputs'}",
        f"--dataset_cache_dir={tmp_path / 'cache'}",
        "--max_num_gpus=0",
        "--num_epochs=1",
        "--patches_per_image=1",
        "--batch_size=2",
        "--test_overlap=0",
        "--run_name=run",
    ]
    vit = "--network_options=token_size=16,hidden_size=48,mlp_dim=64,num_layers=1,num_heads=4"
    assert main(["--model=Hippocampus_ViTAutoEnc", *common, vit, "--checks_every_n_epochs=1"]) == 0
    pretrained = tmp_path / "outputs" / "Hippocampus_ViTAutoEnc" / "run" / "checkpoints" / "last.ckpt"
    slices = sorted((pretrained.parents[1] / "slices" / "epoch_000").glob("*.png"))
    assert slices and Image.open(slices[0]).size == (660, 660)  # 3 columns (original, view 1, restoration) x 3 slices
    # The config's U-Net options are not UNETR's: a UNETR from the checkpoint is built with none of them.
    segmentation = [
        "--model=Hippocampus_Segmentation",
        *common,
        "--network_options=",
        f"--local_weights_path={pretrained}",
        "--freeze_encoder",
    ]
    assert main(segmentation) == 0
    source = load_checkpoint(pretrained)["state_dict"]
    result = load_checkpoint(tmp_path / "outputs" / "Hippocampus_Segmentation" / "run" / "checkpoints" / "last.ckpt")
    vit = {key: value for key, value in result["state_dict"].items() if key.startswith("network.vit.")}
    encoder = {key for key in source if not key.startswith("network.conv3d_transpose")}
    assert {"network." + key.removeprefix("network.vit.") for key in vit} == encoder  # every ViT tensor landed
    for key, value in vit.items():  # frozen, so still the pretrained tensors
        assert torch.equal(value, source["network." + key.removeprefix("network.vit.")]), key
