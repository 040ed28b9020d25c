"""A user's --config_module that registers its own SSL method and encoder, and a model that uses both."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from configs.demo import DemoBYOL
from innerssl.augment.views import ViewGroup
from innerssl.networks import ENCODERS, EncoderSpec
from innerssl.ssl import SSLModule, register_method


class TinyConv(nn.Module):
    feature_layout = "map"
    input_layer_name = "stem"
    spatial_dims = 2

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.body = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.feature_dim = width

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(self.stem(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images).mean(dim=(2, 3))


@ENCODERS.register("tiny_conv")
def build_tiny_conv(spec: EncoderSpec) -> nn.Module:
    return TinyConv(spec.in_channels, int(spec.options.get("width", 8)))


@register_method
class RotationPrediction(SSLModule):
    """Predict by how many quarter turns each image was rotated (Gidaris et al., 2018): one view per image."""

    method_name = "RotationPrediction"
    flag_prefix = "rotation"
    parameter_docs: ClassVar[dict[str, str]] = {"label_smoothing": "label smoothing of the 4-way cross-entropy"}
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"label_smoothing": (0, 1)}

    def __init__(self, label_smoothing: float = 0.0, **base_arguments: Any) -> None:
        super().__init__(**base_arguments)
        self.head = nn.Linear(self.feature_dim, 4)

    @classmethod
    def view_groups(cls, hyperparameters: Any = None) -> tuple[ViewGroup, ...]:
        return (ViewGroup(1),)

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        (images,) = self.checked_views(views)
        turns = torch.arange(images.shape[0], device=images.device) % 4
        rotated = torch.stack([torch.rot90(image, int(k), dims=(-2, -1)) for image, k in zip(images, turns)])
        logits = self.head(self.encoder(rotated))
        return F.cross_entropy(logits, turns, label_smoothing=self.hparams.label_smoothing)


class PluginRotation(DemoBYOL):
    ssl_training_type = "RotationPrediction"
    ssl_encoder = "tiny_conv"
    encoder_options = ["width=12"]
    rotation_label_smoothing = 0.1
