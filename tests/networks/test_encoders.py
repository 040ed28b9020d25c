"""Every registered encoder follows one contract; tests are driven by the registry (a new entry is tested too)."""

import pytest
import torch
from torch import nn

from innerssl.errors import UserError
from innerssl.networks import ENCODERS, EncoderSpec, create_encoder
from innerssl.networks.encoder import describe

# Families need a model name; plain entries are built as registered. Small settings keep this fast.
FAMILY_EXAMPLES = {
    "timm:": [
        EncoderSpec("timm:vit_tiny_patch16_224", options={"img_size": 32, "patch_size": 8}),
        EncoderSpec("timm:resnet18"),
    ],
    "monai:": [
        EncoderSpec("monai:resnet10", spatial_dims=3),
        EncoderSpec(
            "monai:vit",
            spatial_dims=3,
            options={
                "img_size": 16,
                "patch_size": 8,
                "hidden_size": 48,
                "mlp_dim": 96,
                "num_layers": 2,
                "num_heads": 4,
            },
        ),
        EncoderSpec("monai:resnet10", spatial_dims=2),
    ],
}


def registered_specs() -> list[EncoderSpec]:
    specs = []
    for name in ENCODERS.names():
        specs.extend(FAMILY_EXAMPLES[name] if name.endswith(":") else [EncoderSpec(name)])
    return specs


def spec_id(spec: EncoderSpec) -> str:
    return f"{spec.name}-{spec.spatial_dims}d"


@pytest.mark.parametrize("spec", registered_specs(), ids=spec_id)
@pytest.mark.parametrize("in_channels", [1, 4])
def test_every_encoder_follows_the_contract(spec: EncoderSpec, in_channels: int) -> None:
    spec = EncoderSpec(spec.name, in_channels, spec.spatial_dims, spec.options)
    encoder = create_encoder(spec)
    size = 32 if spec.spatial_dims == 2 else 16
    images = torch.rand(2, in_channels, *([size] * spec.spatial_dims))
    pooled = encoder(images)
    assert pooled.shape == (2, encoder.feature_dim)
    assert encoder.spatial_dims == spec.spatial_dims
    features = encoder.forward_features(images)
    if encoder.feature_layout == "tokens":
        assert features.dim() == 3 and features.shape[-1] == encoder.feature_dim
    else:
        assert features.dim() == 2 + spec.spatial_dims and features.shape[1] == encoder.feature_dim
    assert f"{encoder.input_layer_name}.weight" in encoder.state_dict()
    assert encoder.state_dict()[f"{encoder.input_layer_name}.weight"].shape[1] == in_channels
    # The spec rebuilds the same architecture (what checkpoints rely on).
    rebuilt = create_encoder(EncoderSpec.from_dict(describe(encoder).as_dict()))
    rebuilt.load_state_dict(encoder.state_dict())


def test_torchvision_encoders_keep_their_state_dict_keys() -> None:
    keys = set(create_encoder("resnet18", 1).state_dict())
    assert "network.conv1.weight" in keys and "network.layer4.1.bn2.running_mean" in keys
    assert "features.conv0.weight" in create_encoder("densenet121", 1).state_dict()


def test_a_config_module_can_register_its_own_encoder() -> None:
    class TinyEncoder(nn.Module):
        feature_dim = 4
        spatial_dims = 2
        feature_layout = "map"
        input_layer_name = "conv"

        def __init__(self, in_channels: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(in_channels, 4, 3)

        def forward_features(self, images: torch.Tensor) -> torch.Tensor:
            return self.conv(images)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.forward_features(images).mean(dim=(2, 3))

    ENCODERS.register("test_tiny_encoder")(lambda spec: TinyEncoder(spec.in_channels))
    try:
        assert create_encoder("test_tiny_encoder", 2)(torch.rand(1, 2, 8, 8)).shape == (1, 4)
    finally:
        ENCODERS._entries.pop("test_tiny_encoder")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (EncoderSpec("resnet18", spatial_dims=3), "2D torchvision network"),
        (EncoderSpec("timm:"), "names a family but no model"),
        (EncoderSpec("timm:no_such_net"), "Unknown timm model"),
        (EncoderSpec("nosuch"), "Unknown encoder 'nosuch'"),
        (EncoderSpec("resnet18", in_channels=0), "positive number of channels"),
        (EncoderSpec("monai:vit", spatial_dims=3), "needs the encoder option img_size"),
    ],
)
def test_wrong_encoders_give_one_line_errors(spec: EncoderSpec, message: str) -> None:
    with pytest.raises(UserError, match=message) as error:
        create_encoder(spec)
    assert "\n" not in str(error.value)
