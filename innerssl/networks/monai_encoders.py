"""MONAI networks as encoders, 2D or 3D (``spatial_dims``): ``monai:resnet18`` ... ``monai:resnet50``, ``monai:vit``.

ResNets: MONAI's ``resnet*`` without their classification layer (pooled features). ``monai:vit``: MONAI's ViT
(``classification=False``) over ``img_size`` with ``patch_size``, pooled by the mean of its tokens; its size by
the options ``hidden_size``, ``mlp_dim``, ``num_layers``, ``num_heads`` (defaults: ViT-B/16 as in MONAI's
self-supervised tutorial). State-dict keys are MONAI's own under ``network.``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from innerssl.errors import UserError
from innerssl.networks.encoder import EncoderSpec
from innerssl.networks.registry import ENCODERS


def _resnet_builders() -> dict[str, Callable[..., nn.Module]]:
    from monai.networks import nets

    return {name: getattr(nets, name) for name in ("resnet10", "resnet18", "resnet34", "resnet50")}


class MonaiResNetEncoder(nn.Module):
    feature_layout = "map"
    input_layer_name = "network.conv1"

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        builders = _resnet_builders()
        if spec.model_name not in builders:
            raise UserError(f"Unknown MONAI ResNet '{spec.name}': use monai:{', monai:'.join(builders)} or monai:vit")
        self.spatial_dims = spec.spatial_dims
        self.network = builders[spec.model_name](
            spatial_dims=spec.spatial_dims, n_input_channels=spec.in_channels, feed_forward=False, **spec.options
        )
        self.feature_dim = _resnet_width(self.network)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        net = self.network
        x = net.act(net.bn1(net.conv1(images)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def _resnet_width(network: nn.Module) -> int:
    """Channels of the last stage (the pooled feature size)."""
    return int(network.fc.in_features) if getattr(network, "fc", None) is not None else int(network.in_planes)


VIT_DEFAULTS: dict[str, Any] = {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}


class MonaiViTEncoder(nn.Module):
    feature_layout = "tokens"
    input_layer_name = "network.patch_embedding.patch_embeddings"
    num_prefix_tokens = 0

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        from monai.networks.nets import ViT

        options = {**VIT_DEFAULTS, **spec.options}
        for required in ("img_size", "patch_size"):
            if required not in options:
                raise UserError(f"monai:vit needs the encoder option {required} (e.g. --encoder_options={required}=16)")
        self.spatial_dims = spec.spatial_dims
        self.network = ViT(
            in_channels=spec.in_channels, spatial_dims=spec.spatial_dims, classification=False, **options
        )
        self.feature_dim = int(options["hidden_size"])

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        tokens, _hidden_states = self.network(images)
        return tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).mean(dim=1)


@ENCODERS.register("monai:")
def build_monai_encoder(spec: EncoderSpec) -> nn.Module:
    if spec.model_name == "vit":
        return MonaiViTEncoder(spec)
    return MonaiResNetEncoder(spec)
