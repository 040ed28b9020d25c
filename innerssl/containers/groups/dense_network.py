"""The dense-network group: a registered image-to-image network (innerssl.networks.dense) and its options."""

from __future__ import annotations

from typing import Any, ClassVar

import param

from innerssl.networks.dense import DENSE_NETWORKS
from innerssl.networks.options import parse_encoder_options


class DenseNetworkParameters(param.Parameterized):
    group_order: ClassVar[int] = 30
    group_title: ClassVar[str] = "Network"

    network: str = param.String(
        "",
        doc="Dense network: unet, residual_unet, basic_unet, attention_unet, unetr (MONAI, 2D or 3D) or vit_mae (the "
        "masking task's masked-autoencoder ViT); empty: the task's default (crappify: unet, masking: vit_mae; "
        "segmentation: the pretrained checkpoint's network, else unet).",
    )

    network_options: list[str] = param.List(
        [],
        item_type=str,
        doc="Construction options as key=value, e.g. channels=16x32x64,strides=2x2 for a U-Net or "
        "token_size=8,hidden_size=192,num_layers=4,num_heads=4 for vit_mae (tuples as 16x32). Recorded in checkpoints.",
    )

    def network_option_values(self) -> dict[str, Any]:
        return parse_encoder_options(self.network_options, "--network_options")

    def validate_network_name(self, name: str) -> None:
        DENSE_NETWORKS.get(name)
