"""Every registered dense network follows one contract; tests are driven by the registry (a new entry is tested too)."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from innerssl.errors import UserError
from innerssl.networks.dense import (
    DENSE_NETWORKS,
    DenseNetworkSpec,
    _skip_layers,
    create_dense_network,
    dense_network_names,
    encoder_keys,
    is_encoder_key,
)

TINY_VIT = {"hidden_size": 48, "mlp_dim": 64, "num_layers": 2, "num_heads": 4}
# Small settings keep this fast; an entry not listed here is tested with its defaults.
TINY_OPTIONS = {
    "unet": {"channels": (8, 16, 32), "strides": (2, 2)},
    "residual_unet": {"channels": (8, 16, 32), "strides": (2, 2)},
    "attention_unet": {"channels": (8, 16, 32), "strides": (2, 2)},
    "basic_unet": {"features": (4, 4, 8, 8, 16, 4)},
    "unetr": {**TINY_VIT, "feature_size": 8},
    "vit_mae": {
        **TINY_VIT,
        "token_size": 8,
        "decoder_hidden_size": 48,
        "decoder_mlp_dim": 64,
        "decoder_num_layers": 1,
        "decoder_num_heads": 4,
    },
    "vit_autoenc": {**TINY_VIT, "token_size": 4},
}
# basic_unet down-samples by 16 and its instance norm needs more than one voxel at the bottom.
PATCHES = {("basic_unet", 3): (16, 16, 32)}


def patch_of(name: str, spatial_dims: int) -> tuple[int, ...]:
    return PATCHES.get((name, spatial_dims), (32, 32) if spatial_dims == 2 else (16, 16, 16))


def spec_of(name: str, spatial_dims: int, in_channels: int, out_channels: int, **changes) -> DenseNetworkSpec:
    fields = {"patch_size": patch_of(name, spatial_dims), "options": TINY_OPTIONS.get(name, {}), **changes}
    return DenseNetworkSpec(name, spatial_dims, in_channels, out_channels, **fields)


@pytest.mark.parametrize("name", DENSE_NETWORKS.names())
@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("in_channels", [1, 2])
def test_every_dense_network_follows_the_contract(name: str, spatial_dims: int, in_channels: int) -> None:
    torch.manual_seed(0)
    spec = spec_of(name, spatial_dims, in_channels, in_channels)
    network = create_dense_network(spec)
    images = torch.rand(2, in_channels, *spec.patch_size)
    assert network(images).shape == (2, in_channels, *spec.patch_size)
    assert network.spec == spec

    three = create_dense_network(spec_of(name, spatial_dims, in_channels, 3))
    assert three(images).shape == (2, 3, *spec.patch_size)

    # The spec rebuilds the same architecture from plain types (what checkpoints rely on).
    state = spec.as_dict()
    assert isinstance(state["patch_size"], list)
    rebuilt = DenseNetworkSpec.from_dict(state)
    assert rebuilt == spec
    create_dense_network(rebuilt).load_state_dict(network.state_dict())

    keys = list(network.state_dict())
    encoder = encoder_keys(network)
    assert encoder and set(encoder) < set(keys)
    assert encoder == [key for key in keys if is_encoder_key(network)(key)]
    for prefix in network.encoder_prefixes:
        assert any(key.startswith(prefix) for key in keys), prefix
    for prefix in network.output_layer_prefixes:
        assert any(key.startswith(prefix) for key in keys), prefix
        assert not any(key.startswith(prefix) for key in encoder)
    # The encoder is the down path: no transposed (up-sampling) convolution in it.
    for module_name, module in network.named_modules():
        if f"{module_name}.".startswith(tuple(network.encoder_prefixes)):
            assert not isinstance(module, nn.ConvTranspose2d | nn.ConvTranspose3d), module_name


@pytest.mark.parametrize("name", DENSE_NETWORKS.names())
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_patch_the_network_cannot_divide_is_a_user_error(name: str, spatial_dims: int) -> None:
    bad = tuple(size + 2 for size in patch_of(name, spatial_dims))
    with pytest.raises(UserError, match="--patch_size"):
        create_dense_network(spec_of(name, spatial_dims, 1, 1, patch_size=bad))
    with pytest.raises(UserError, match="--patch_size"):
        create_dense_network(spec_of(name, spatial_dims, 1, 1, patch_size=(32,) * (5 - spatial_dims)))


def test_divisibility_errors_name_the_divisor() -> None:
    with pytest.raises(UserError, match=r"\(4, 4\)"):
        create_dense_network(spec_of("unet", 2, 1, 1, patch_size=(32, 30)))
    with pytest.raises(UserError, match=r"\(16, 16\)"):
        create_dense_network(spec_of("unetr", 2, 1, 1, patch_size=(32, 40)))
    with pytest.raises(UserError, match="single voxel"):
        create_dense_network(spec_of("basic_unet", 3, 1, 1, patch_size=(16, 16, 16)))


def test_options_override_the_defaults_and_bad_options_are_user_errors() -> None:
    network = create_dense_network(spec_of("unet", 2, 1, 1, options={"channels": [4, 8], "strides": [2]}))
    assert network.encoder_prefixes == ("model.0.", "model.1.submodule.")
    assert DenseNetworkSpec("unet", options={"channels": [4, 8]}) == DenseNetworkSpec(
        "unet", options={"channels": (4, 8)}
    )
    with pytest.raises(UserError, match="unet"):
        create_dense_network(spec_of("unet", 2, 1, 1, options={**TINY_OPTIONS["unet"], "no_such_option": 1}))
    with pytest.raises(UserError, match="vit_patch_size"):
        create_dense_network(spec_of("unetr", 2, 1, 1, options={**TINY_OPTIONS["unetr"], "vit_patch_size": 8}))
    with pytest.raises(UserError, match="Unknown dense network"):
        create_dense_network(DenseNetworkSpec("no_such_network", patch_size=(32, 32)))


def test_unetr_skips_from_the_layers_monai_uses() -> None:
    assert _skip_layers(12) == (3, 6, 9)
    assert _skip_layers(2) == (0, 1, 1)
    network = create_dense_network(spec_of("unetr", 2, 1, 1))
    assert len(network.vit.blocks) == 2


def test_a_config_module_can_register_its_own_dense_network() -> None:
    @DENSE_NETWORKS.register("test_identity_dense")
    def build(spec: DenseNetworkSpec) -> nn.Module:
        network = nn.Conv2d(spec.in_channels, spec.out_channels, 1)
        network.encoder_prefixes = ("weight",)
        network.output_layer_prefixes = ("weight",)
        return network

    try:
        assert "test_identity_dense" in dense_network_names()
        network = create_dense_network(DenseNetworkSpec("test_identity_dense", 2, 1, 2, (8, 8)))
        assert network(torch.rand(1, 1, 8, 8)).shape == (1, 2, 8, 8)
    finally:
        DENSE_NETWORKS._entries.pop("test_identity_dense")


def test_the_encoder_registry_does_not_import_monai() -> None:
    code = (
        "import sys; from innerssl.networks.registry import ENCODERS; ENCODERS.names();"
        "from innerssl.networks.dense import dense_network_names; dense_network_names();"
        "assert 'monai' not in sys.modules, 'monai imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["vit_autoenc", "vit_mae", "unetr"])
def test_vit_presets_set_the_sizes_and_explicit_options_win(name: str) -> None:
    from innerssl.networks.dense import VIT_PRESETS, vit_options

    assert vit_options({"preset": "small", "num_layers": 2}) == {**VIT_PRESETS["small"], "num_layers": 2}
    options = {"preset": "tiny", "num_layers": 1}
    if name == "vit_mae":
        options.update(decoder_hidden_size=48, decoder_mlp_dim=64, decoder_num_layers=1, decoder_num_heads=4)
    network = create_dense_network(spec_of(name, 2, 1, 1, options=options))
    blocks = network.vit.blocks if name == "unetr" else network.blocks
    assert len(blocks) == 1 and blocks[0].mlp.linear1.out_features == 768  # tiny: width 192, MLP 768
    assert blocks[0].attn.num_heads == 3
    with pytest.raises(UserError, match="preset=huge is not one of base, small, tiny"):
        create_dense_network(spec_of(name, 2, 1, 1, options={"preset": "huge"}))
