"""DINO: self-distillation with no labels (Caron et al., 2021).

A student network (encoder + DINO projection head: MLP, l2-normalised bottleneck, weight-normalised layer
with ``output_dim`` outputs) is trained to match the softmax of a teacher network over the ``output_dim``
dimensions. The teacher is an exponential moving average of the student, its momentum on the cosine schedule
from ``base_momentum`` to 1 that BYOL uses (``innerssl/ssl/momentum.py``). The teacher's outputs are centred
(a moving average of their batch mean, updated across processes) and sharpened with a low
``teacher_temperature``; the student's softmax uses ``student_temperature``. Both avoid collapse together.
The loss is lightly's ``DINOLoss``: cross-entropy between the teacher on one view and the student on the
other, both ways.

Differences from the paper: only the two global views innerssl's SSL batches hold, no multi-crop (small
local crops seen only by the student), which the paper adds for accuracy, not for stability; a constant
teacher temperature (the paper warms it up from 0.04 to 0.07 over 30 epochs, 0.04 throughout is its
stable setting); the last layer is not frozen in the first epoch. Downstream tasks use the teacher
encoder, as the paper evaluates.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import nn

from innerssl.ssl.momentum import MomentumSSLModule, momentum_copy


class DINO(MomentumSSLModule):
    method_name = "DINO"

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 256,
        output_dim: int = 65536,
        teacher_temperature: float = 0.04,
        student_temperature: float = 0.1,
        base_momentum: float = 0.996,
        **base_arguments: Any,
    ) -> None:
        """``projection_hidden_dim``: the head's MLP width (paper: 2048); ``projection_dim``: its bottleneck
        (256); ``output_dim``: the dimensions of the softmax (65536); ``teacher_temperature`` (0.04) and
        ``student_temperature`` (0.1) of the softmaxes; ``base_momentum``: the teacher's initial EMA momentum
        (0.996), cosine schedule to 1."""
        super().__init__(**base_arguments)
        self.student_head = self._head(projection_hidden_dim, projection_dim, output_dim)
        self.teacher_encoder = momentum_copy(self.encoder)
        # The head's weight norm cannot be deep-copied: the teacher's head is built anew and loads the student's.
        self.teacher_head = momentum_copy(
            self.student_head, new=self._head(projection_hidden_dim, projection_dim, output_dim)
        )
        self.criterion = DINOLoss(
            output_dim=output_dim,
            warmup_teacher_temp=teacher_temperature,
            teacher_temp=teacher_temperature,
            student_temp=student_temperature,
        )

    def _head(self, hidden_dim: int, bottleneck_dim: int, output_dim: int) -> DINOProjectionHead:
        with warnings.catch_warnings():  # lightly's head uses torch.nn.utils.weight_norm, deprecated in torch
            warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
            return DINOProjectionHead(self.feature_dim, hidden_dim, bottleneck_dim, output_dim)

    def embedding_encoder(self) -> nn.Module:
        return self.teacher_encoder

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.teacher_encoder), (self.student_head, self.teacher_head)]

    def ssl_loss(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        views = torch.cat([view0, view1])
        student = self.student_head(self.encoder(views)).chunk(2)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder(views)).chunk(2)
        # DINOLoss moves the teacher centre on every call; validation batches must leave it as training left it.
        center = None if self.training else self.criterion.center.detach().clone()
        loss = self.criterion(list(teacher), list(student), teacher_temp=self.hparams.teacher_temperature)
        if center is not None:
            self.criterion.center.copy_(center)
        return loss
