"""Image encoders: torchvision backbones without their classification layer, any input channel count."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision import models

from innerssl.errors import UserError


class ResNetEncoder(nn.Module):
    """A torchvision ResNet up to global average pooling; returns (N, feature_dim) embeddings."""

    def __init__(self, network: models.ResNet, in_channels: int) -> None:
        super().__init__()
        if in_channels != 3:
            old = network.conv1
            network.conv1 = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
        self.feature_dim = network.fc.in_features
        network.fc = nn.Identity()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


class DenseNetEncoder(nn.Module):
    """A torchvision DenseNet up to global average pooling; returns (N, feature_dim) embeddings."""

    def __init__(self, network: models.DenseNet, in_channels: int) -> None:
        super().__init__()
        if in_channels != 3:
            old = network.features.conv0
            network.features.conv0 = nn.Conv2d(
                in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, bias=False
            )
        self.feature_dim = network.classifier.in_features
        self.features = network.features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.features(images))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(features, 1), 1)


ENCODER_FACTORIES: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": lambda c: ResNetEncoder(models.resnet18(weights=None), c),
    "resnet50": lambda c: ResNetEncoder(models.resnet50(weights=None), c),
    "resnet101": lambda c: ResNetEncoder(models.resnet101(weights=None), c),
    "densenet121": lambda c: DenseNetEncoder(models.densenet121(weights=None), c),
}
ENCODER_NAMES = tuple(ENCODER_FACTORIES)


def create_encoder(name: str, in_channels: int) -> nn.Module:
    """A randomly initialised encoder with a ``feature_dim`` attribute (no weights are downloaded)."""
    if name not in ENCODER_FACTORIES:
        raise UserError(f"Unknown encoder '{name}'. Available: {', '.join(ENCODER_NAMES)}")
    if in_channels not in (1, 3):
        raise UserError(f"in_channels must be 1 or 3, got {in_channels}")
    return ENCODER_FACTORIES[name](in_channels)
