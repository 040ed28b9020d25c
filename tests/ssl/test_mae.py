"""MAE: masked-patch loss, masking, norm-pix targets, reconstructions, the mae_checks pictures, the demo config."""

from __future__ import annotations

import matplotlib.image
import pytest
import pytorch_lightning as pl
import torch
from lightly.models import utils
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from configs.demo_vit import DemoMAE
from innerssl.errors import UserError
from innerssl.networks import create_encoder
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint, load_checkpoint
from innerssl.outputs.mae_checks import PANELS, MAEChecks, check_due
from innerssl.runner import main
from innerssl.ssl.mae import MAE
from innerssl.ssl.parameters import method_parameters
from tests.conftest import tiny_classifier_flags, tiny_demo_flags

VIT = "timm:vit_tiny_patch16_224"
VIT_OPTIONS = {"img_size": 32, "patch_size": 8, "depth": 2}  # two blocks: fast, still a timm ViT
PATCHES = 16  # 32 px images in 8 px patches
PATCH_PIXELS = 64


def tiny_mae(in_channels: int = 1, **kwargs) -> MAE:
    torch.manual_seed(0)
    settings = {"decoder_dim": 32, "decoder_depth": 1, "decoder_num_heads": 4, **kwargs}
    return MAE(encoder_name=VIT, in_channels=in_channels, encoder_options=dict(VIT_OPTIONS), **settings)


def smooth_images(channels: int = 1, batch: int = 8) -> torch.Tensor:
    """Blurry random images: the masked patches are predictable from the visible ones (noise would not be)."""
    coarse = torch.rand(batch, channels, 4, 4, generator=torch.Generator().manual_seed(1))
    return functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)


def fixed_mask(model: MAE, batch: int = 8, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return model.mask_indices(batch, torch.device("cpu"), torch.Generator().manual_seed(seed))


def pixel_mask(idx_mask: torch.Tensor) -> torch.Tensor:
    """(N, 1, 32, 32) True on the pixels of the patches at ``idx_mask``."""
    flags = torch.zeros(idx_mask.shape[0], PATCHES, 1)
    flags = utils.set_at_index(flags, idx_mask, torch.ones(*idx_mask.shape, 1))
    return utils.unpatchify(flags.expand(-1, -1, PATCH_PIXELS), 8, 1) > 0.5


def test_loss_counts_only_the_masked_patches(monkeypatch):
    model = tiny_mae()
    images = smooth_images()
    targets = model.targets(images)
    idx_keep, idx_mask = fixed_mask(model)
    monkeypatch.setattr(model, "mask_indices", lambda *args, **kwargs: (idx_keep, idx_mask))

    # Perfect on the visible patches, off by exactly 1 on every pixel of the masked ones: loss 1.
    wrong_on_masked = utils.set_at_index(targets, idx_mask, utils.get_at_index(targets, idx_mask) + 1)
    monkeypatch.setattr(model, "predict", lambda images, keep: wrong_on_masked)
    assert model.ssl_loss(images).item() == pytest.approx(1.0)

    garbage_on_visible = utils.set_at_index(wrong_on_masked, idx_keep, torch.randn(8, idx_keep.shape[1], PATCH_PIXELS))
    monkeypatch.setattr(model, "predict", lambda images, keep: garbage_on_visible)
    assert model.ssl_loss(images).item() == pytest.approx(1.0)

    perfect_on_masked = utils.set_at_index(garbage_on_visible, idx_mask, utils.get_at_index(targets, idx_mask))
    monkeypatch.setattr(model, "predict", lambda images, keep: perfect_on_masked)
    assert model.ssl_loss(images).item() == pytest.approx(0.0, abs=1e-7)


def test_loss_gradient_reaches_only_the_masked_predictions():
    model = tiny_mae()
    images = smooth_images()
    idx_keep, idx_mask = fixed_mask(model)
    predictions = model.predict(images, idx_keep).detach().requires_grad_()
    model.masked_patch_loss(predictions, model.targets(images), idx_mask).backward()
    per_patch = predictions.grad.abs().sum(dim=-1)  # (N, L)
    assert torch.all(utils.get_at_index(per_patch.unsqueeze(-1), idx_keep) == 0)
    assert torch.all(utils.get_at_index(per_patch.unsqueeze(-1), idx_mask) > 0)


@pytest.mark.parametrize(("ratio", "masked"), [(0.75, 12), (0.6, 10), (0.5, 8)])
def test_mask_ratio_gives_the_expected_number_of_masked_tokens(ratio, masked):
    model = tiny_mae(mask_ratio=ratio)
    for idx_keep, idx_mask in (model.mask_indices(8, torch.device("cpu")), fixed_mask(model)):
        assert idx_mask.shape == (8, masked) and idx_keep.shape == (8, PATCHES - masked)
        every_patch = torch.cat([idx_keep, idx_mask], dim=1).sort(dim=1).values
        assert torch.equal(every_patch, torch.arange(PATCHES).expand(8, -1))  # a partition of the patches

    seen: list[int] = []
    hook = model.encoder.model.blocks[0].register_forward_hook(lambda module, inputs, out: seen.append(out.shape[1]))
    model.ssl_loss(smooth_images())
    hook.remove()
    assert seen == [1 + PATCHES - masked]  # the encoder sees the class token and the visible patches only


@pytest.mark.parametrize("ratio", [0.99, 0.0])
def test_a_mask_ratio_that_masks_all_or_no_patches_is_refused(ratio):
    with pytest.raises(UserError, match="--mae_mask_ratio"):
        tiny_mae(mask_ratio=ratio)


def test_norm_pix_loss_switches_between_normalised_and_raw_patch_targets():
    images = smooth_images(channels=3) * 5 + 2
    raw = tiny_mae(in_channels=3, norm_pix_loss=False).targets(images)
    assert raw.shape == (8, PATCHES, 3 * PATCH_PIXELS)
    assert torch.equal(utils.unpatchify(raw, 8, 3), images)  # raw pixels, patch by patch

    normalised = tiny_mae(in_channels=3, norm_pix_loss=True).targets(images)
    assert torch.allclose(normalised.mean(dim=-1), torch.zeros(8, PATCHES), atol=1e-4)
    assert torch.allclose(normalised.var(dim=-1), torch.ones(8, PATCHES), atol=1e-3)
    expected = (raw - raw.mean(dim=-1, keepdim=True)) / (raw.var(dim=-1, keepdim=True) + 1e-6).sqrt()
    assert torch.allclose(normalised, expected, atol=1e-5)
    assert not torch.allclose(normalised, raw, atol=0.1)


@pytest.mark.parametrize("channels", [1, 3])
def test_one_and_three_input_channels_train_and_reconstruct(channels):
    model = tiny_mae(in_channels=channels)
    images = smooth_images(channels=channels)
    idx_keep, _ = fixed_mask(model)
    assert model.predict(images, idx_keep).shape == (8, PATCHES, channels * PATCH_PIXELS)
    loss = model.ssl_loss(images)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert model.encoder.model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert all(part.shape == images.shape for part in model.reconstruct(images)[:3])
    assert model.encoder(images).shape == (8, model.feature_dim)  # the monitors' full-image embeddings


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_reconstruct_pastes_the_original_visible_patches_exactly(norm_pix_loss, monkeypatch):
    model = tiny_mae(in_channels=3, norm_pix_loss=norm_pix_loss)
    images = smooth_images(channels=3) * 3 - 1
    result = model.reconstruct(images, generator=torch.Generator().manual_seed(5))
    visible = ~result.mask.expand_as(images)
    assert result.mask.float().mean().item() == pytest.approx(0.75)
    assert torch.equal(result.pasted[visible], images[visible])
    assert torch.equal(result.masked[visible], images[visible])
    assert torch.equal(result.pasted[~visible], result.reconstruction[~visible])
    assert not torch.allclose(result.reconstruction[visible], images[visible], atol=1e-2)  # untrained: only pasted
    channel_means = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    assert torch.allclose(result.masked[~visible], channel_means[~visible])
    again = model.reconstruct(images, generator=torch.Generator().manual_seed(5))
    assert torch.equal(again.mask, result.mask)  # a seeded generator: the same mask at every check

    # Predicting the targets exactly reconstructs the image: norm-pix predictions are un-normalised per patch.
    monkeypatch.setattr(model, "predict", lambda images, keep: model.targets(images))
    assert torch.allclose(model.reconstruct(images).reconstruction, images, atol=1e-4)


def test_encoders_that_are_no_timm_vit_and_bad_sizes_are_refused():
    with pytest.raises(UserError, match=r"MAE needs a timm ViT.*--ssl_encoder=timm:vit_"):
        MAE(encoder_name="resnet18", in_channels=1)
    with pytest.raises(UserError, match="--mae_decoder_dim=30 must be divisible by --mae_decoder_num_heads=4"):
        tiny_mae(decoder_dim=30)
    with pytest.raises(UserError, match="--encoder_options=img_size=64,patch_size=8"):
        tiny_mae().ssl_loss(torch.rand(2, 1, 64, 64))


def test_the_vit_lives_only_under_encoder_for_the_classifier():
    model = tiny_mae()
    assert model.embedding_encoder() is model.encoder and model.embedding_encoder_prefix() == "encoder."
    assert model.masked_vit.vit is model.encoder.model  # lightly's wrapper shares the ViT, it is no copy
    keys = model.state_dict().keys()
    assert {key.split(".")[0] for key in keys} == {"encoder", "decoder"}
    encoder_keys = {key.removeprefix("encoder.") for key in keys if key.startswith("encoder.")}
    assert encoder_keys == set(create_encoder(VIT, 1, **VIT_OPTIONS).state_dict())
    assert not model.encoder.model.pos_embed.requires_grad  # the paper's fixed sine-cosine position embeddings


def test_steps_lower_the_loss_on_a_fixed_batch():
    model = tiny_mae()
    images = smooth_images()
    idx_keep, idx_mask = fixed_mask(model, seed=11)

    def held_out_loss() -> float:  # one fixed mask, to compare before and after
        with torch.no_grad():
            return model.masked_patch_loss(model.predict(images, idx_keep), model.targets(images), idx_mask).item()

    before = held_out_loss()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model.ssl_loss(images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert held_out_loss() < 0.7 * before
    assert sum(losses[-5:]) < 0.7 * sum(losses[:5])


def test_check_epochs_are_every_nth_and_the_last():
    assert [epoch for epoch in range(7) if check_due(epoch, 3, max_epochs=7)] == [2, 5, 6]
    assert [epoch for epoch in range(4) if check_due(epoch, 5, max_epochs=4)] == [3]
    assert not any(check_due(epoch, 0, max_epochs=4) for epoch in range(4))


def test_a_trainer_run_writes_the_mae_checks_pictures(tmp_path):
    model = tiny_mae(checks_every_n_epochs=5, checks_num_images=3)
    (callback,) = model.configure_callbacks()
    assert isinstance(callback, MAEChecks)
    assert tiny_mae(checks_every_n_epochs=0).configure_callbacks() == []
    data = TensorDataset(smooth_images(batch=8), torch.zeros(8, dtype=torch.long))
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))

    checks = tmp_path / "mae_checks"
    assert sorted(path.name for path in checks.glob("*.png")) == ["epoch_000.png"]  # the last epoch
    grid = matplotlib.image.imread(checks / "epoch_000.png")
    assert grid.shape[1] > grid.shape[0] > 100  # 4 panels wide, 3 rows high
    panels = sorted(path.name for path in (checks / "epoch_000").iterdir())
    assert panels == sorted(f"image_{index}_{panel}.png" for index in range(3) for panel in PANELS)
    original = matplotlib.image.imread(checks / "epoch_000" / "image_0_original.png")
    assert original.shape[:2] == (32, 32) and original.std() > 0
    assert model.training  # the check put the module back in training mode


def test_demo_config_sets_only_flags_of_mae():
    flags = method_parameters(MAE)
    configured = [name for name in vars(DemoMAE) if name.startswith("mae_")]
    assert configured and all(name in flags for name in configured)
    assert DemoMAE.ssl_training_type == "MAE"


def test_demo_mae_run_writes_mae_checks_and_an_encoder_the_vit_classifier_loads(tmp_path):
    """End to end through the runner: needs the container wiring of method flags (--mae_...)."""
    flags = [flag for flag in tiny_demo_flags(tmp_path, num_epochs=1) if not flag.startswith("--projection")]
    vit_options = "--encoder_options=img_size=32,patch_size=8,depth=2"
    mae_flags = ["--mae_decoder_dim=32", "--mae_decoder_depth=1", "--mae_decoder_num_heads=4"]
    mae_flags.append("--mae_checks_num_images=2")
    assert main(["--model=DemoMAE", *flags, vit_options, *mae_flags]) == 0
    run = tmp_path / "outputs" / "DemoMAE" / "test"
    assert (run / "mae_checks" / "epoch_000.png").is_file()  # the last epoch
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["innerssl"]["method"] == "MAE" and checkpoint["global_step"] > 0
    assert checkpoint["hyper_parameters"]["decoder_dim"] == 32
    state = encoder_state_from_ssl_checkpoint(last, VIT, 1)
    create_encoder(VIT, 1, img_size=32, patch_size=8, depth=2).load_state_dict(state)  # strict: a ViT's keys

    classifier_flags = tiny_classifier_flags(tmp_path, num_epochs=1, local_weights_path=last, freeze_encoder="true")
    assert main(["--model=DemoViTClassifier", *classifier_flags, vit_options]) == 0
    classifier = load_checkpoint(tmp_path / "outputs" / "DemoViTClassifier" / "test" / "checkpoints" / "last.ckpt")
    for name, tensor in state.items():  # the frozen classifier encoder is MAE's ViT, bit for bit
        assert torch.equal(classifier["state_dict"]["encoder." + name], tensor), name
