"""VICReg: variance-invariance-covariance regularization (Bardes et al., 2022).

The projections of two views of an image are pulled together (invariance: mean squared error), while each
projection dimension keeps a standard deviation of at least 1 over the batch (variance, hinge) and
different dimensions are decorrelated (covariance). No negatives, no target network. lightly's
``VICRegLoss`` with the paper's weights 25 / 25 / 1; under DDP the variance and covariance terms use the
projections of every process. The projection head is lightly's ``VICRegProjectionHead`` with two layers
(linear, BatchNorm, ReLU, linear), as in lightly's examples; the paper uses three layers of 8192.
Downstream tasks use the encoder.
"""

from __future__ import annotations

from typing import Any

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from innerssl.ssl.base import SSLModule


class VICReg(SSLModule):
    method_name = "VICReg"

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 2048,
        invariance_weight: float = 25.0,
        variance_weight: float = 25.0,
        covariance_weight: float = 1.0,
        **base_arguments: Any,
    ) -> None:
        """``invariance_weight`` (paper: 25), ``variance_weight`` (25) and ``covariance_weight`` (1) weigh the
        three terms of the loss."""
        super().__init__(**base_arguments)
        self.projector = VICRegProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim, num_layers=2)
        self.criterion = VICRegLoss(
            lambda_param=invariance_weight,
            mu_param=variance_weight,
            nu_param=covariance_weight,
            gather_distributed=True,
        )

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        view0, view1 = self.checked_views(views)
        z0, z1 = self.projector(self.encoder(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)
