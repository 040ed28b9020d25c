"""Any timm model as an encoder: ``timm:<model name>``, e.g. ``timm:vit_tiny_patch16_224``, ``timm:convnext_tiny``.

Built with ``num_classes=0`` (timm's pooled features: the class token or global average) and ``in_chans`` set
to the run's channel count; ``--encoder_options`` pass further arguments (a ViT's ``img_size`` and
``patch_size`` for small images). The state-dict keys are timm's own under ``model.``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from innerssl.errors import UserError
from innerssl.networks.encoder import EncoderSpec
from innerssl.networks.registry import ENCODERS


def timm_model(spec: EncoderSpec, pretrained: bool = False) -> nn.Module:
    import timm

    if spec.spatial_dims != 2:
        raise UserError(f"{spec.name}: timm models are 2D; for volumes use a monai:<network> encoder")
    if spec.model_name not in timm.list_models() and not timm.is_model(spec.model_name):
        raise UserError(
            f"Unknown timm model '{spec.model_name}' in --ssl_encoder={spec.name}: see timm.list_models() for names"
        )
    options: dict[str, Any] = {"num_classes": 0, "in_chans": spec.in_channels, **spec.options}
    try:
        return timm.create_model(spec.model_name, pretrained=pretrained, **options)
    except TypeError as error:
        raise UserError(f"{spec.name} does not take these encoder options ({error}): check --encoder_options") from None


class TimmEncoder(nn.Module):
    """A timm model: pooled embeddings from ``forward``, tokens or feature maps from ``forward_features``."""

    spatial_dims = 2

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = int(model.num_features)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        self.feature_layout = "tokens" if hasattr(model, "patch_embed") else "map"
        first = model.pretrained_cfg.get("first_conv") if hasattr(model, "pretrained_cfg") else None
        self.input_layer_name = f"model.{first}" if first else ""

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


@ENCODERS.register("timm:")
def build_timm_encoder(spec: EncoderSpec) -> nn.Module:
    return TimmEncoder(timm_model(spec))
