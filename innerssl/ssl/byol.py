"""BYOL: an online network predicts an exponential-moving-average target network's projection.

Grill et al., 2020. The target's momentum follows a cosine schedule from ``base_momentum`` to 1 over
training (``innerssl/ssl/momentum.py``); the loss is the symmetric negative cosine similarity. The target
encoder is what downstream tasks use (as in InnerEye).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from innerssl.ssl.momentum import MomentumSSLModule, momentum_copy
from innerssl.ssl.registry import register_method


@register_method
class BYOL(MomentumSSLModule):
    method_name = "BYOL"
    flag_prefix = "byol"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "hidden size of the projection (and prediction) head",
        "projection_dim": "output size of the projection head",
        "base_momentum": "initial EMA momentum of the target network (cosine schedule to 1)",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "base_momentum": (0, 1),
    }

    def __init__(
        self,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        base_momentum: float = 0.99,
        **base_arguments: Any,
    ) -> None:
        super().__init__(**base_arguments)
        self.projector = BYOLProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.predictor = BYOLPredictionHead(projection_dim, projection_hidden_dim, projection_dim)
        self.target_encoder = momentum_copy(self.encoder)
        self.target_projector = momentum_copy(self.projector)
        self.criterion = NegativeCosineSimilarity()

    def embedding_encoder(self) -> nn.Module:
        return self.target_encoder

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.target_encoder), (self.projector, self.target_projector)]

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        view0, view1 = self.checked_views(views)
        views = torch.cat([view0, view1])
        predictions = self.predictor(self.projector(self.encoder(views)))
        with torch.no_grad():
            targets = self.target_projector(self.target_encoder(views))
        p0, p1 = predictions.chunk(2)
        z0, z1 = targets.chunk(2)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
