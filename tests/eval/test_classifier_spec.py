"""The classifier records its encoder spec (with construction options) and rebuilds from it; where a classifier
container's encoder spec and starting weights come from; the one-line error for a checkpoint of another encoder."""

from __future__ import annotations

import pytest
import torch
from torchvision import models

from innerssl.errors import UserError
from innerssl.eval.classifier import SSLClassifier
from innerssl.networks import EncoderSpec
from innerssl.networks.options import parse_encoder_options
from innerssl.outputs.checkpoints import (
    CHECKPOINT_KEY,
    check_encoder_spec,
    classifier_checkpoint_encoder_spec,
    format_encoder_options,
    load_checkpoint,
)
from innerssl.registry import find_model
from tests.conftest import tiny_classifier_flags

VIT = EncoderSpec("timm:vit_tiny_patch16_224", 2, 2, {"img_size": 16, "patch_size": 8, "depth": 1})


def classifier_module(**arguments) -> SSLClassifier:
    return SSLClassifier(task="binary", class_names=("no", "yes"), **arguments)


def save_like_lightning(module: SSLClassifier, path) -> None:
    """What Lightning's checkpoint holds of a module: weights, hyperparameters, the module's metadata."""
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


def test_a_classifier_checkpoint_records_and_rebuilds_its_encoder_spec(tmp_path):
    torch.manual_seed(0)
    module = classifier_module(encoder_name=VIT.name, in_channels=2, encoder_spec=VIT.as_dict())
    assert module.encoder.spec == VIT and module.encoder.model.patch_embed.patch_size == (8, 8)
    path = tmp_path / "classifier.ckpt"
    save_like_lightning(module, path)

    stored = load_checkpoint(path)  # weights_only: the spec is plain values
    assert stored[CHECKPOINT_KEY]["encoder_spec"] == VIT.as_dict()
    assert classifier_checkpoint_encoder_spec(path) == VIT
    rebuilt = classifier_module(
        **{k: v for k, v in stored["hyper_parameters"].items() if k not in ("task", "class_names")}
    )
    rebuilt.load_state_dict(stored["state_dict"])  # strict: the same network, ViT options included
    images = torch.rand(3, 2, 16, 16)
    module.eval(), rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images), module(images))


def test_a_classifier_from_before_the_spec_builds_from_name_and_channels(tmp_path):
    module = classifier_module(encoder_name="resnet18", in_channels=1)  # hyperparameters of older checkpoints
    assert module.encoder_spec == EncoderSpec("resnet18", 1, 2, {})
    path = tmp_path / "old.ckpt"
    save_like_lightning(module, path)
    assert classifier_checkpoint_encoder_spec(path) == EncoderSpec("resnet18", 1)
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {"kind": "ssl"}}, tmp_path / "ssl.ckpt")
    with pytest.raises(UserError, match="not an innerssl classifier checkpoint"):
        classifier_checkpoint_encoder_spec(tmp_path / "ssl.ckpt")


def test_the_options_check_names_the_flags_that_rebuild_the_checkpoint_encoder():
    assert parse_encoder_options(format_encoder_options(VIT.options).split(",")) == VIT.options
    assert format_encoder_options({"img_size": (96, 96, 96), "dynamic_img_size": True}) == (
        "img_size=96x96x96,dynamic_img_size=true"
    )
    check_encoder_spec(VIT, EncoderSpec(VIT.name, 2, 2, {"depth": 1, "patch_size": 8, "img_size": 16}), "x.ckpt")
    # A tuple option read back as a list (YAML, JSON) is the same option.
    check_encoder_spec(EncoderSpec("m", 1, 3, {"s": (4, 4)}), EncoderSpec("m", 1, 3, {"s": [4, 4]}), "x.ckpt")
    for requested in (
        EncoderSpec(VIT.name, 2, 2, {"img_size": 16, "patch_size": 16, "depth": 1}),
        EncoderSpec(VIT.name, 2, 2, {}),
        EncoderSpec(VIT.name, 1, 2, VIT.options),
        EncoderSpec("resnet18", 2, 2, VIT.options),
    ):
        with pytest.raises(UserError) as error:
            check_encoder_spec(VIT, requested, "ssl.ckpt")
        message = str(error.value)
        assert "\n" not in message
        assert message.endswith(
            f"set --ssl_encoder={VIT.name} --in_channels=2 --encoder_options=img_size=16,patch_size=8,depth=1"
        )


def container(tmp_path, **overrides):
    instance = find_model("DemoClassifier", [])()
    instance.apply_flags(dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, **overrides)))
    return instance


def test_without_a_checkpoint_the_spec_and_starting_weights_come_from_the_flags(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(5)
    published = models.resnet18(weights=None).state_dict()  # the keys torchvision publishes, 3 channels
    torch.save(published, weights)
    classifier = container(tmp_path, encoder_weights=weights)
    classifier.validate()
    assert classifier.classifier_encoder_spec() == EncoderSpec("resnet18", 1, 2, {})
    module = classifier.create_lightning_module(classifier.create_datamodule())
    expected = published["conv1.weight"].sum(dim=1, keepdim=True)  # RGB weights summed for one channel
    torch.testing.assert_close(module.encoder.network.conv1.weight, expected)
    torch.testing.assert_close(module.encoder.network.layer3[0].conv2.weight, published["layer3.0.conv2.weight"])
    torch.testing.assert_close(classifier.create_encoder().network.conv1.weight, expected)  # the kNN encoder too
    random = container(tmp_path).create_encoder().network.conv1.weight
    assert not torch.allclose(random, expected)

    vit = container(tmp_path, ssl_encoder=VIT.name, in_channels=2)
    vit.param.update(encoder_options=["img_size=16", "patch_size=8", "depth=1"])
    assert vit.classifier_encoder_spec() == VIT and vit.create_encoder().spec == VIT


def test_encoder_weights_and_an_ssl_checkpoint_together_are_a_one_line_error(tmp_path):
    both = container(tmp_path, encoder_weights="imagenet", local_weights_path=tmp_path / "ssl.ckpt")
    with pytest.raises(UserError, match="leave out --encoder_weights") as error:
        both.validate(check_this_machine=False)
    assert "\n" not in str(error.value)


def test_a_test_only_run_builds_the_encoder_of_its_classifier_checkpoint(tmp_path):
    path = tmp_path / "vit_classifier.ckpt"
    save_like_lightning(classifier_module(encoder_name=VIT.name, in_channels=2, encoder_spec=VIT.as_dict()), path)
    test_only = container(tmp_path, test_only_checkpoint=path)  # the flags still say resnet18, 1 channel
    assert test_only.classifier_encoder_spec() == VIT
