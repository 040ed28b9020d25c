"""SimCLR: contrast two views of each image against all other images (Chen et al., 2020).

NT-Xent with a temperature; under DDP the negatives are gathered from every process.
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from innerssl.ssl.base import SSLModule


class SimCLR(SSLModule):
    method_name = "SimCLR"

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 10,
        channels_last: bool = False,
        optimizer_name: str = "adamw",
        lars_momentum: float = 0.9,
        lars_trust_coefficient: float = 1e-3,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(
            encoder_name,
            in_channels,
            learning_rate,
            weight_decay,
            warmup_epochs,
            channels_last,
            optimizer_name,
            lars_momentum,
            lars_trust_coefficient,
        )
        self.projector = SimCLRProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def ssl_loss(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        z0, z1 = self.projector(self.encoder(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)
