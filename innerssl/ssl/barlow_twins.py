"""Barlow Twins: redundancy reduction (Zbontar et al., 2021).

The cross-correlation matrix between the batch-normalised projections of two views of the same images is
pushed towards the identity: diagonal terms to 1 (invariance), off-diagonal terms to 0, weighted by
``lambda_param`` (redundancy reduction). No negatives, no target network. lightly's ``BarlowTwinsLoss``
(under DDP the cross-correlation matrix sums over every process's batch) and ``BarlowTwinsProjectionHead``
(three linear layers, BatchNorm and ReLU after the first two; the paper uses 8192 units each). Downstream
tasks use the encoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from innerssl.ssl.base import SSLModule
from innerssl.ssl.registry import register_method


@register_method
class BarlowTwins(SSLModule):
    method_name = "BarlowTwins"
    flag_prefix = "barlow_twins"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "hidden size of the projection (and prediction) head",
        "projection_dim": "output size of the projection head",
        "lambda_param": "weight of the off-diagonal (redundancy reduction) terms",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "lambda_param": (0, None),
    }

    def __init__(
        self,
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
        lambda_param: float = 5e-3,
        **base_arguments: Any,
    ) -> None:
        """``lambda_param``: weight of the off-diagonal (redundancy reduction) terms (paper: 5e-3)."""
        super().__init__(**base_arguments)
        self.projector = BarlowTwinsProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=lambda_param, gather_distributed=True)

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        view0, view1 = self.checked_views(views)
        z0, z1 = self.projector(self.encoder(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)
