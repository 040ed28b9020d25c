"""BYOL: an online network predicts an exponential-moving-average target network's projection.

Grill et al., 2020. The target's momentum follows a cosine schedule from ``base_momentum`` to 1 over
training; the loss is the symmetric negative cosine similarity. The target encoder is what downstream
tasks use (as in InnerEye).
"""

from __future__ import annotations

import copy
import math

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from torch import nn

from innerssl.ssl.base import SSLModule


class BYOL(SSLModule):
    method_name = "BYOL"

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 10,
        channels_last: bool = False,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__(encoder_name, in_channels, learning_rate, weight_decay, warmup_epochs, channels_last)
        self.projector = BYOLProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.predictor = BYOLPredictionHead(projection_dim, projection_hidden_dim, projection_dim)
        self.target_encoder = copy.deepcopy(self.encoder)
        self.target_projector = copy.deepcopy(self.projector)
        deactivate_requires_grad(self.target_encoder)
        deactivate_requires_grad(self.target_projector)
        self.criterion = NegativeCosineSimilarity()

    def embedding_encoder(self) -> nn.Module:
        return self.target_encoder

    def current_momentum(self) -> float:
        """Cosine from ``base_momentum`` to 1 over the fraction of training done (robust to resuming elsewhere)."""
        base = self.hparams.base_momentum
        return 1.0 - (1.0 - base) * (math.cos(math.pi * self.training_fraction()) + 1) / 2

    @torch.no_grad()
    def update_target(self, momentum: float) -> None:
        """target <- momentum * target + (1 - momentum) * online."""
        update_momentum(self.encoder, self.target_encoder, momentum)
        update_momentum(self.projector, self.target_projector, momentum)

    def on_train_batch_start_ssl(self) -> None:
        momentum = self.current_momentum()
        self.update_target(momentum)
        self.log("ssl/byol_momentum", momentum, on_step=True, on_epoch=False)

    def ssl_loss(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        views = torch.cat([view0, view1])
        predictions = self.predictor(self.projector(self.encoder(views)))
        with torch.no_grad():
            targets = self.target_projector(self.target_encoder(views))
        p0, p1 = predictions.chunk(2)
        z0, z1 = targets.chunk(2)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
