"""Registered encoders in real runs: a timm ViT, starting weights, and an encoder added by --config_module."""

from pathlib import Path

import torch
from torchvision import models

from innerssl.outputs.checkpoints import encoder_spec_of, load_checkpoint
from innerssl.runner import main
from tests.conftest import tiny_demo_flags

PLUGIN_CONFIG = Path(__file__).parent / "plugin_config.py"


def test_a_timm_vit_pretrains_and_its_checkpoint_records_the_options(tmp_path):
    flags = tiny_demo_flags(tmp_path, num_epochs=1, ssl_encoder="timm:vit_tiny_patch16_224")
    assert main(["--model=DemoBYOL", *flags, "--encoder_options=img_size=32,patch_size=8"]) == 0
    checkpoint = load_checkpoint(tmp_path / "outputs" / "DemoBYOL" / "test" / "checkpoints" / "last.ckpt")
    spec = encoder_spec_of(checkpoint["innerssl"])
    assert spec.name == "timm:vit_tiny_patch16_224" and spec.options == {"img_size": 32, "patch_size": 8}
    assert any(key.startswith("target_encoder.model.blocks.") for key in checkpoint["state_dict"])


def test_ssl_continues_from_imagenet_style_weights_in_online_and_target_networks(tmp_path):
    weights = tmp_path / "resnet18.pth"
    published = models.resnet18(weights=None).state_dict()
    torch.save(published, weights)
    flags = tiny_demo_flags(tmp_path, num_epochs=1, ssl_encoder="resnet18", learning_rate=0)
    assert main(["--model=DemoBYOL", *flags, f"--encoder_weights={weights}"]) == 0
    state = load_checkpoint(tmp_path / "outputs" / "DemoBYOL" / "test" / "checkpoints" / "last.ckpt")["state_dict"]
    expected = published["layer2.0.conv1.weight"]
    for prefix in ("encoder", "target_encoder"):  # learning rate 0: both still hold the loaded weights
        torch.testing.assert_close(state[f"{prefix}.network.layer2.0.conv1.weight"], expected)
    torch.testing.assert_close(state["encoder.network.conv1.weight"], published["conv1.weight"].sum(1, keepdim=True))


def test_a_config_module_adds_an_encoder(tmp_path):
    flags = tiny_demo_flags(tmp_path, num_epochs=1)
    assert main(["--model=PluginSimCLR", f"--config_module={PLUGIN_CONFIG}", *flags]) == 0
    checkpoint = load_checkpoint(tmp_path / "outputs" / "PluginSimCLR" / "test" / "checkpoints" / "last.ckpt")
    assert encoder_spec_of(checkpoint["innerssl"]).options == {"width": 24}
    assert checkpoint["state_dict"]["encoder.stem.weight"].shape == (24, 1, 3, 3)
