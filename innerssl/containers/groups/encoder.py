"""The encoder group: which registered network, its construction options, starting weights and input channels."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import param

from innerssl.errors import UserError
from innerssl.networks import ENCODERS, EncoderSpec
from innerssl.networks.options import parse_encoder_options
from innerssl.networks.registry import family_of
from innerssl.networks.weights import IMAGENET, NO_WEIGHTS


class EncoderParameters(param.Parameterized):
    """The encoder: a registry entry (innerssl.networks) with its options, weights and channels."""

    group_order: ClassVar[int] = 30
    group_title: ClassVar[str] = "Encoder"

    ssl_encoder: str = param.String(
        "resnet50",
        doc="Encoder network: a registered name (resnet18, resnet50, resnet101, densenet121: torchvision), "
        "timm:<model> (any timm model, e.g. timm:vit_tiny_patch16_224, timm:convnext_tiny) or monai:<network> "
        "(resnet10 ... resnet50, vit; 2D or 3D); your own through --config_module (ENCODERS.register).",
    )

    encoder_options: list[str] = param.List(
        [],
        item_type=str,
        doc="Construction options of the encoder as key=value, e.g. img_size=64,patch_size=8 for a timm ViT on "
        "64 px images (tuples as 96x96x96). Recorded in checkpoints, so classifiers and export rebuild the encoder.",
    )

    encoder_weights: str = param.String(
        "none",
        doc="Starting weights of the encoder: none (random), imagenet (torchvision's or timm's own, downloaded on "
        "first use), or a file (a state dict .pt/.pth or .safetensors, with the library's or the encoder's keys). "
        "A 1-channel encoder sums RGB first-layer weights over the channels.",
    )

    in_channels: int = param.Integer(
        1,
        bounds=(1, None),
        doc="Input channels the encoder takes: 1 for radiographs, 3 for RGB, any other count for multi-channel "
        "microscopy (images with one channel are repeated to it).",
    )

    def validate_group(self, check_this_machine: bool) -> None:
        ENCODERS.get(family_of(self.ssl_encoder))
        self.encoder_spec()
        weights = self.encoder_weights
        if check_this_machine and weights not in (NO_WEIGHTS, IMAGENET) and not Path(weights).is_file():
            raise UserError(f"--encoder_weights={weights} is not a file: pass none, imagenet or a state dict file")

    def encoder_spec(self) -> EncoderSpec:
        """The encoder this run trains: registry name, channels, options (2D images)."""
        return EncoderSpec(self.ssl_encoder, self.in_channels, 2, parse_encoder_options(self.encoder_options))
