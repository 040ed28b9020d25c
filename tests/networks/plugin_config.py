"""A user's --config_module that registers its own encoder and a model that uses it."""

from __future__ import annotations

import torch
from torch import nn

from configs.demo import DemoSimCLR
from innerssl.networks import ENCODERS, EncoderSpec


class TwoLayerEncoder(nn.Module):
    feature_layout = "map"
    input_layer_name = "stem"
    spatial_dims = 2

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.body = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.feature_dim = width

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).mean(dim=(2, 3))


@ENCODERS.register("two_layer")
def build_two_layer(spec: EncoderSpec) -> nn.Module:
    return TwoLayerEncoder(spec.in_channels, int(spec.options.get("width", 16)))


class PluginSimCLR(DemoSimCLR):
    ssl_encoder = "two_layer"
    encoder_options = ["width=24"]
