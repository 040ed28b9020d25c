"""VICReg: variance-invariance-covariance regularization (Bardes et al., 2022).

The projections of two views of an image are pulled together (invariance: mean squared error), while each
projection dimension keeps a standard deviation of at least 1 over the batch (variance, hinge) and
different dimensions are decorrelated (covariance). No negatives, no target network. lightly's
``VICRegLoss`` with the paper's weights 25 / 25 / 1; under DDP the variance and covariance terms use the
projections of every process. The projection head is lightly's ``VICRegProjectionHead`` with two layers
(linear, BatchNorm, ReLU, linear) of the paper's width, 8192 (the paper uses three layers).
Downstream tasks use the encoder.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead

from innerssl.ssl.base import SSLModule
from innerssl.ssl.registry import register_method


@register_method
class VICReg(SSLModule):
    method_name = "VICReg"
    flag_prefix = "vicreg"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "hidden size of the projection (and prediction) head",
        "projection_dim": "output size of the projection head",
        "invariance_weight": "weight of the invariance (mean squared error) term",
        "variance_weight": "weight of the variance (std of each dimension >= 1) term",
        "covariance_weight": "weight of the covariance (decorrelation) term",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "invariance_weight": (0, None),
        "variance_weight": (0, None),
        "covariance_weight": (0, None),
    }

    def __init__(
        self,
        projection_hidden_dim: int = 8192,
        projection_dim: int = 8192,
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
