"""SimCLR: contrast two views of each image against all other images (Chen et al., 2020).

NT-Xent with a temperature; under DDP the negatives are gathered from every process.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from innerssl.ssl.base import SSLModule
from innerssl.ssl.registry import register_method


@register_method
class SimCLR(SSLModule):
    method_name = "SimCLR"
    flag_prefix = "simclr"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "hidden size of the projection (and prediction) head",
        "projection_dim": "output size of the projection head",
        "temperature": "NT-Xent temperature",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "temperature": (0.0001, None),
    }

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 128,
        temperature: float = 0.1,
        **base_arguments: Any,
    ) -> None:
        super().__init__(**base_arguments)
        self.projector = SimCLRProjectionHead(self.feature_dim, projection_hidden_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        view0, view1 = self.checked_views(views)
        z0, z1 = self.projector(self.encoder(torch.cat([view0, view1]))).chunk(2)
        return self.criterion(z0, z1)
