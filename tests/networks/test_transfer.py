"""Weight transfer by name and shape: encoders only, prefixes, strictness, and the refusal to load nothing."""

import logging

import pytest
import torch

from innerssl.errors import UserError
from innerssl.networks.dense import DenseNetworkSpec, create_dense_network, encoder_keys, is_encoder_key
from innerssl.networks.transfer import TransferReport, transfer_weights

UNET = {"channels": (8, 16, 32), "strides": (2, 2)}
VIT = {"hidden_size": 48, "mlp_dim": 64, "num_layers": 2, "num_heads": 4}


def network(name: str, out_channels: int = 1, options: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    spec = DenseNetworkSpec(name, 2, 1, out_channels, (32, 32), UNET if options is None else options)
    return create_dense_network(spec)


def randomised(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A source unlike any fresh initialisation (buffers too), as a trained network would be."""
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.is_floating_point():
                value.normal_()
    return {key: value.clone() for key, value in module.state_dict().items()}


def test_a_unet_encoder_lands_in_a_unet_with_other_output_channels() -> None:
    source = randomised(network("unet"))
    target = network("unet", out_channels=2, seed=1)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    report = transfer_weights(target, source)
    after = target.state_dict()
    for key in encoder_keys(target):
        assert torch.equal(after[key], source[key]) and not torch.equal(after[key], before[key]), key
    mismatched = {key for key, _source_shape, _target_shape in report.shape_mismatch}
    assert {"model.2.conv.weight", "model.2.conv.bias"} == mismatched
    assert ("model.2.conv.weight", (16, 1, 3, 3), (16, 2, 3, 3)) in report.shape_mismatch
    assert torch.equal(after["model.2.conv.weight"], before["model.2.conv.weight"])
    assert not report.missing and not report.unused  # a mismatched source key is reported once, as such
    with pytest.raises(UserError, match="--strict_weights"):
        transfer_weights(network("unet", out_channels=2), source, strict=True)


def test_only_keys_restricts_the_transfer_to_the_encoder_and_buffers_travel() -> None:
    source_network = network("attention_unet")
    source = randomised(source_network)
    target = network("attention_unet", out_channels=2, seed=1)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    report = transfer_weights(target, source, only_keys=is_encoder_key(target), strict=True)
    assert report.loaded == encoder_keys(target)
    assert not report.shape_mismatch and not report.missing
    after = target.state_dict()
    assert torch.equal(after["model.0.conv.0.adn.N.running_mean"], source["model.0.conv.0.adn.N.running_mean"])
    for key in set(after) - set(report.loaded):
        assert torch.equal(after[key], before[key]), key
    assert "model.1.attention.W_g.0.conv.weight" in report.unused


def test_prefixes_are_stripped_and_keys_without_them_ignored() -> None:
    source = {f"network.{key}": value for key, value in randomised(network("unet")).items()}
    source["other.weight"] = torch.zeros(3)
    target = network("unet", seed=1)
    report = transfer_weights(target, source, source_prefix="network.", strict=True)
    assert len(report.loaded) == len(target.state_dict()) and not report.unused
    assert torch.equal(target.state_dict()["model.0.conv.weight"], source["network.model.0.conv.weight"])


def test_a_vit_mae_encoder_lands_in_a_unetr() -> None:
    mae_options = {**VIT, "token_size": 16, "decoder_hidden_size": 48, "decoder_num_heads": 4, "decoder_num_layers": 1}
    source = randomised(network("vit_mae", options=mae_options))
    unetr = network("unetr", options={**VIT, "feature_size": 8}, seed=1)
    report = transfer_weights(unetr, source, target_prefix="vit.", strict=True)
    vit_keys = [key for key in unetr.state_dict() if key.startswith("vit.")]
    assert report.loaded == vit_keys and not report.missing and not report.shape_mismatch
    after = unetr.state_dict()
    for key in ("patch_embedding.patch_embeddings.weight", "blocks.1.attn.qkv.weight", "norm.weight"):
        assert torch.equal(after[f"vit.{key}"], source[key])
    assert {"decoder_pred.weight", "decoder_embed.weight", "mask_tokens", "cls_token"} <= set(report.unused)
    assert not any(key.startswith("vit.") for key in report.unused)


def test_a_checkpoint_that_matches_nothing_is_refused() -> None:
    source = {"conv1.weight": torch.zeros(8, 1, 3, 3), "fc.weight": torch.zeros(2, 8)}
    with pytest.raises(UserError, match="None of the 2 weights"):
        transfer_weights(network("unet"), source)
    with pytest.raises(UserError, match="same architecture"):
        transfer_weights(network("unet"), randomised(network("unet")), source_prefix="network.")


def test_stale_cross_attention_keys_are_ignored_even_when_strict() -> None:
    source = randomised(network("vit_mae", options={**VIT, "token_size": 16, "decoder_num_heads": 4}))
    source["blocks.0.cross_attn.qkv.weight"] = torch.zeros(144, 48)
    target = network("vit_mae", options={**VIT, "token_size": 16, "decoder_num_heads": 4}, seed=1)
    report = transfer_weights(target, source, strict=True)
    assert report.unused == ["blocks.0.cross_attn.qkv.weight"]


def test_the_report_logs_a_summary_and_at_most_twenty_names(caplog: pytest.LogCaptureFixture) -> None:
    report = TransferReport(loaded=["a"], missing=[f"missing.{i}" for i in range(25)], unused=["x.cross_attn.q"])
    assert report.summary() == (
        "1 tensors loaded, 0 skipped for their shape, 25 missing from the source, 1 source tensors unused"
    )
    with caplog.at_level(logging.INFO):
        report.log(logging.getLogger("test"), "encoder weights")
    assert "encoder weights: 1 tensors loaded" in caplog.text
    assert "missing.19 and 5 more" in caplog.text and "missing.20" not in caplog.text
    assert "cross_attn" not in caplog.text
