"""Starting weights from local files (no network): ImageNet-style RGB weights into 1-channel encoders."""

import pytest
import torch
from torchvision import models

from innerssl.errors import UserError
from innerssl.networks import EncoderSpec, create_encoder
from innerssl.networks.weights import adapt_input_weight, load_starting_weights


def test_torchvision_resnet50_from_a_published_style_state_dict(tmp_path):
    # What torchvision publishes: the bare ResNet's keys (conv1.weight, ..., fc.*), RGB first layer.
    published = models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50_imagenet.pth"
    torch.save(published, path)
    encoder = create_encoder("resnet50", 1)
    load_starting_weights(encoder, str(path))
    state = encoder.state_dict()
    torch.testing.assert_close(state["network.conv1.weight"], published["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(state["network.layer3.2.conv2.weight"], published["layer3.2.conv2.weight"])
    torch.testing.assert_close(state["network.bn1.running_var"], published["bn1.running_var"])


def test_timm_vit_from_safetensors_with_a_resampled_position_embedding(tmp_path):
    import timm
    from safetensors.torch import save_file

    published = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000, img_size=64).state_dict()
    path = tmp_path / "vit.safetensors"
    save_file(published, str(path))
    encoder = create_encoder(EncoderSpec("timm:vit_tiny_patch16_224", 1, options={"img_size": 32, "patch_size": 16}))
    load_starting_weights(encoder, str(path))
    state = encoder.state_dict()
    first = "model.patch_embed.proj.weight"
    torch.testing.assert_close(state[first], published["patch_embed.proj.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(state["model.blocks.0.attn.qkv.weight"], published["blocks.0.attn.qkv.weight"])
    assert state["model.pos_embed"].shape == (1, 1 + 2 * 2, 192)  # 64 px grid of 4x4 resampled to 2x2


def test_more_channels_repeat_the_rgb_weights_rescaled():
    rgb = torch.randn(8, 3, 3, 3)
    five = adapt_input_weight(rgb, 5)
    assert five.shape == (8, 5, 3, 3)
    torch.testing.assert_close(five[:, 3:], rgb[:, :2] * 3 / 5)
    torch.testing.assert_close(five.sum(dim=1) * 5 / 3, torch.cat([rgb, rgb[:, :2]], 1).sum(dim=1))


def test_weights_that_do_not_fit_are_refused_by_name(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(UserError, match="does not fit this encoder"):
        load_starting_weights(create_encoder("resnet50", 1), str(path))
    with pytest.raises(UserError, match="no such file"):
        load_starting_weights(create_encoder("resnet50", 1), str(tmp_path / "absent.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable state dict"):
        load_starting_weights(create_encoder("resnet50", 1), str(tmp_path / "junk.pth"))


def test_imagenet_offline_says_how_to_pass_a_file(monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    with pytest.raises(UserError, match="--encoder_weights=<file>"):
        load_starting_weights(create_encoder("resnet18", 1), "imagenet")
