"""MoCo v3 for a ResNet (Chen, Xie and He, 2021).

A query network (encoder + 3-layer projector, lightly's ``MoCoProjectionHead`` with BatchNorm after every
layer, + 2-layer predictor with BatchNorm after its hidden layer, as in the paper's code) predicts the
projection of the other view made by a momentum network (an exponential moving average of encoder +
projector, no predictor, momentum on the cosine schedule from ``base_momentum`` to 1 that BYOL uses,
``innerssl/ssl/momentum.py``). There is no queue: the other images' keys in the batch are the negatives.

The loss is the paper's symmetric InfoNCE, ``ctr(q0, k1) + ctr(q1, k0)`` with
``ctr(q, k) = 2 * temperature * CrossEntropy(normalize(q) @ normalize(k_all).T / temperature, positives)``,
where ``k_all`` are the keys of every process under DDP (gathered; keys carry no gradient) and the positive
of each query is the key of the same image. The temperature defaults to 1.0, the MoCo v3 code's value for
ResNets (0.2 is its ViT value). Downstream tasks use the momentum encoder, as the paper does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.heads import ProjectionHead
from lightly.utils import dist
from torch import nn

from innerssl.ssl.momentum import MomentumSSLModule, momentum_copy
from innerssl.ssl.registry import register_method


def moco_v3_contrastive_loss(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of each query against the keys of every process; the positive is the key at the same index.

    Multiplied by ``2 * temperature``, as in the MoCo v3 code, so that the gradient scale does not depend on the
    temperature.
    """
    queries = F.normalize(queries, dim=1)
    keys = F.normalize(keys, dim=1)
    if dist.world_size() > 1:
        keys = torch.cat(dist.gather(keys.contiguous()), dim=0)
    logits = queries @ keys.T / temperature
    labels = torch.arange(queries.shape[0], device=queries.device) + dist.rank() * queries.shape[0]
    return F.cross_entropy(logits, labels) * (2 * temperature)


@register_method
class MoCoV3(MomentumSSLModule):
    method_name = "MoCoV3"
    flag_prefix = "mocov3"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "hidden size of the projector and the predictor",
        "projection_dim": "output size of the projector and the predictor",
        "temperature": "contrastive loss temperature (1.0 for ResNets, 0.2 for ViTs, as in MoCo v3)",
        "base_momentum": "initial EMA momentum of the momentum encoder (cosine schedule to 1)",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "temperature": (0.0001, None),
        "base_momentum": (0, 1),
    }

    def __init__(
        self,
        projection_hidden_dim: int = 4096,
        projection_dim: int = 256,
        temperature: float = 1.0,
        base_momentum: float = 0.99,
        **base_arguments: Any,
    ) -> None:
        """``projection_hidden_dim`` (paper: 4096) and ``projection_dim`` (256): the projector's and the
        predictor's hidden and output sizes; ``temperature``: of the contrastive loss (1.0 for ResNets);
        ``base_momentum``: the momentum network's initial EMA momentum (0.99), cosine schedule to 1."""
        super().__init__(**base_arguments)
        self.projector = MoCoProjectionHead(
            self.feature_dim, projection_hidden_dim, projection_dim, num_layers=3, batch_norm=True
        )
        # MoCo v3's predictor: BatchNorm and ReLU after the hidden layer, none after the output.
        self.predictor = ProjectionHead(
            [
                (projection_dim, projection_hidden_dim, nn.BatchNorm1d(projection_hidden_dim), nn.ReLU()),
                (projection_hidden_dim, projection_dim, None, None),
            ]
        )
        self.momentum_encoder = momentum_copy(self.encoder)
        self.momentum_projector = momentum_copy(self.projector)

    def embedding_encoder(self) -> nn.Module:
        return self.momentum_encoder

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)]

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        view0, view1 = self.checked_views(views)
        views = torch.cat([view0, view1])
        q0, q1 = self.predictor(self.projector(self.encoder(views))).chunk(2)
        with torch.no_grad():
            k0, k1 = self.momentum_projector(self.momentum_encoder(views)).chunk(2)
        temperature = self.hparams.temperature
        return moco_v3_contrastive_loss(q0, k1, temperature) + moco_v3_contrastive_loss(q1, k0, temperature)
