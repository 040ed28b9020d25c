"""torchvision CNNs without their classification layer: ``resnet18``, ``resnet50``, ``resnet101``, ``densenet121``.

The module layout (and so the state-dict keys) is the one innerssl always had: ``network.*`` for ResNets,
``features.*`` for DenseNet, so existing checkpoints load unchanged. 2D only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

from innerssl.errors import UserError
from innerssl.networks.encoder import EncoderSpec
from innerssl.networks.registry import ENCODERS


def _replace_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if in_channels == conv.in_channels:
        return conv
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)


def _two_dimensional(spec: EncoderSpec) -> None:
    if spec.spatial_dims != 2:
        raise UserError(f"{spec.name} is a 2D torchvision network: for volumes use a monai:<network> encoder")
    if spec.options:
        raise UserError(f"{spec.name} takes no encoder options, got {', '.join(spec.options)}")


class ResNetEncoder(nn.Module):
    """A torchvision ResNet up to global average pooling; returns (N, feature_dim) embeddings."""

    spatial_dims = 2
    feature_layout = "map"
    input_layer_name = "network.conv1"

    def __init__(self, network: models.ResNet, in_channels: int) -> None:
        super().__init__()
        network.conv1 = _replace_input_conv(network.conv1, in_channels)
        self.feature_dim = network.fc.in_features
        network.fc = nn.Identity()
        self.network = network

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        net = self.network
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


class DenseNetEncoder(nn.Module):
    """A torchvision DenseNet up to global average pooling; returns (N, feature_dim) embeddings."""

    spatial_dims = 2
    feature_layout = "map"
    input_layer_name = "features.conv0"

    def __init__(self, network: models.DenseNet, in_channels: int) -> None:
        super().__init__()
        network.features.conv0 = _replace_input_conv(network.features.conv0, in_channels)
        self.feature_dim = network.classifier.in_features
        self.features = network.features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.features(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.forward_features(images), 1), 1)


TORCHVISION_NETWORKS: dict[str, tuple[Callable[..., nn.Module], type[nn.Module]]] = {
    "resnet18": (models.resnet18, ResNetEncoder),
    "resnet50": (models.resnet50, ResNetEncoder),
    "resnet101": (models.resnet101, ResNetEncoder),
    "densenet121": (models.densenet121, DenseNetEncoder),
}


def torchvision_network(name: str, pretrained: bool = False) -> nn.Module:
    """The torchvision network; ``pretrained``: its ImageNet weights (downloaded on first use, then cached)."""
    build, _wrapper = TORCHVISION_NETWORKS[name]
    return build(weights="DEFAULT" if pretrained else None)


def _register(name: str) -> None:
    @ENCODERS.register(name)
    def build(spec: EncoderSpec) -> nn.Module:
        _two_dimensional(spec)
        _build, wrapper = TORCHVISION_NETWORKS[name]
        return wrapper(torchvision_network(name), spec.in_channels)  # type: ignore[call-arg]


for _name in TORCHVISION_NETWORKS:
    _register(_name)
