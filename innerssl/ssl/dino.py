"""DINO: self-distillation with no labels (Caron et al., 2021).

A student network (encoder + DINO projection head: MLP, l2-normalised bottleneck, weight-normalised layer
with ``output_dim`` outputs) is trained to match the softmax of a teacher network over the ``output_dim``
dimensions. The teacher is an exponential moving average of the student, its momentum on the cosine schedule
from ``base_momentum`` to 1 that BYOL uses (``innerssl/ssl/momentum.py``). The teacher's outputs are centred
(a moving average of their batch mean, updated across processes) and sharpened with a low
``teacher_temperature``; the student's softmax uses ``student_temperature``. Both avoid collapse together.
The loss is lightly's ``DINOLoss``: the mean cross-entropy between the teacher on each global view and the
student on every other view (all pairs except a view with itself).

Multi-crop (the paper's): the teacher sees the two global views (the augmentation config's size, crop scale
``global_crop_scale`` or the config's), the student those and ``num_local_crops`` small local crops
(``local_crop_size``: a fraction of the global side up to 1, pixels above; crop scale ``local_crop_scale``,
default 0.05-0.4), which teach it to match local details to the global picture. Views of one size go
through the networks together (as the paper's multi-crop wrapper does), so BatchNorm sees global and local
crops in separate batches. ``num_local_crops=0`` is two-view DINO, the loss of the two global views both
ways. Encoders must take the smaller local crops: CNNs do; a timm ViT needs the encoder option
``dynamic_img_size=true`` (and a local size divisible by its patch size, or ``dynamic_img_pad=true``).

Differences from the paper: a constant teacher temperature (the paper warms it up from 0.04 to 0.07 over 30
epochs, 0.04 throughout is its stable setting); the last layer is not frozen in the first epoch; every view
gets the same augmentation config (the paper varies blur and solarization between the global views and the
local crops). Downstream tasks use the teacher encoder, as the paper evaluates.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from torch import nn

from innerssl.augment.views import ViewGroup, views_of_role
from innerssl.errors import UserError
from innerssl.ssl.momentum import MomentumSSLModule, momentum_copy
from innerssl.ssl.registry import register_method

GLOBAL_VIEWS = 2
"""The teacher's views: two global crops, as in the paper."""
DEFAULT_LOCAL_CROP_SIZE = 0.43
"""Local crop side as a fraction of the global side: 96 px for 224 px global crops, the paper's sizes."""
DEFAULT_LOCAL_CROP_SCALE = (0.05, 0.4)
"""Area fraction of the local crops (the paper's; its global crops take 0.4-1)."""


@register_method
class DINO(MomentumSSLModule):
    method_name = "DINO"
    flag_prefix = "dino"
    parameter_docs: ClassVar[dict[str, str]] = {
        "projection_hidden_dim": "width of the DINO head's MLP",
        "projection_dim": "bottleneck of the DINO head (l2-normalised before the last layer)",
        "output_dim": "dimensions of the softmax the student matches to the teacher (the head's last layer)",
        "teacher_temperature": "teacher softmax temperature (low: sharpened targets)",
        "student_temperature": "student softmax temperature",
        "base_momentum": "initial EMA momentum of the teacher network (cosine schedule to 1)",
        "num_local_crops": (
            "multi-crop: small local crops per image that only the student sees, beside the two global views that"
            " teacher and student see (the paper: 6 or 10); 0: two-view DINO"
        ),
        "local_crop_size": (
            "side of the local crops, a fraction of the global views' side when at most 1 (0.43: 96 px for 224 px"
            " views, 28 px for the 64 px demo), pixels above 1 (e.g. 96). A timm ViT needs "
            "--encoder_options=...,dynamic_img_size=true for them, and a size divisible by its patch size (or "
            "dynamic_img_pad=true)"
        ),
        "global_crop_scale": (
            "area fraction min,max of the two global views, e.g. 0.4,1 (the paper's with local crops; it takes "
            "0.14,1 without); empty (the default): the SSL augmentation config's random_crop.scale"
        ),
        "local_crop_scale": "area fraction min,max of the image that a local crop covers (the paper: 0.05,0.4)",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "output_dim": (2, None),
        "teacher_temperature": (0.0001, None),
        "student_temperature": (0.0001, None),
        "base_momentum": (0, 1),
        "num_local_crops": (0, None),
        "local_crop_size": (0, None),
    }

    @classmethod
    def check_encoder(cls, encoder: nn.Module, hyperparameters: Mapping[str, Any]) -> None:
        super().check_encoder(encoder, hyperparameters)
        if views_of_role(cls.view_groups(hyperparameters), "local"):
            check_encoder_takes_other_sizes(encoder, hyperparameters["encoder_name"])

    def __init__(
        self,
        projection_hidden_dim: int = 2048,
        projection_dim: int = 256,
        output_dim: int = 65536,
        teacher_temperature: float = 0.04,
        student_temperature: float = 0.1,
        base_momentum: float = 0.996,
        num_local_crops: int = 6,
        local_crop_size: float = DEFAULT_LOCAL_CROP_SIZE,
        global_crop_scale: Sequence[float] = (),
        local_crop_scale: Sequence[float] = DEFAULT_LOCAL_CROP_SCALE,
        **base_arguments: Any,
    ) -> None:
        """``projection_hidden_dim``: the head's MLP width (paper: 2048); ``projection_dim``: its bottleneck
        (256); ``output_dim``: the dimensions of the softmax (65536); ``teacher_temperature`` (0.04) and
        ``student_temperature`` (0.1) of the softmaxes; ``base_momentum``: the teacher's initial EMA momentum
        (0.996), cosine schedule to 1. Multi-crop: ``num_local_crops`` (6; 0: two-view DINO) local crops of
        side ``local_crop_size`` (a fraction of the global side up to 1, pixels above; 0.43: 96 of 224 px) and
        area fraction ``local_crop_scale`` (0.05-0.4); ``global_crop_scale``: the global views' area fraction
        (empty: the augmentation config's; the paper takes 0.4-1 with local crops)."""
        super().__init__(**base_arguments)
        self.global_positions = views_of_role(self.declared_views, "global")
        self.local_positions = views_of_role(self.declared_views, "local")
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

    @classmethod
    def view_groups(cls, hyperparameters: Mapping[str, Any] | None = None) -> tuple[ViewGroup, ...]:
        """Two global views (teacher and student) and ``num_local_crops`` local crops (student only)."""
        settings = cls.hyperparameters_with_defaults(hyperparameters)
        global_scale = crop_scale(settings["global_crop_scale"], "--dino_global_crop_scale", allow_none=True)
        groups = [ViewGroup(GLOBAL_VIEWS, crop_scale=global_scale, role="global")]
        num_local_crops = int(settings["num_local_crops"])
        if num_local_crops < 0:
            raise UserError(f"--dino_num_local_crops must be >= 0, got {num_local_crops}")
        if num_local_crops > 0:
            size = float(settings["local_crop_size"])
            if not size > 0:
                raise UserError(f"--dino_local_crop_size must be > 0 (a fraction up to 1, or pixels), got {size:g}")
            local_scale = crop_scale(settings["local_crop_scale"], "--dino_local_crop_scale")
            groups.append(ViewGroup(num_local_crops, size=size, crop_scale=local_scale, role="local"))
        return tuple(groups)

    def _head(self, hidden_dim: int, bottleneck_dim: int, output_dim: int) -> DINOProjectionHead:
        with warnings.catch_warnings():  # lightly's head uses torch.nn.utils.weight_norm, deprecated in torch
            warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
            return DINOProjectionHead(self.feature_dim, hidden_dim, bottleneck_dim, output_dim)

    def embedding_encoder(self) -> nn.Module:
        return self.teacher_encoder

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.encoder, self.teacher_encoder), (self.student_head, self.teacher_head)]

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        views = tuple(self.checked_views(views))
        global_views = torch.cat([views[i] for i in self.global_positions])
        count = len(self.global_positions)
        student = list(self.student_head(self.encoder(global_views)).chunk(count))
        if self.local_positions:
            # One pass for all local crops: they share a size (a second batch for BatchNorm, as in the paper).
            local_views = torch.cat([views[i] for i in self.local_positions])
            student += self.student_head(self.encoder(local_views)).chunk(len(self.local_positions))
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_encoder(global_views)).chunk(count)
        # DINOLoss moves the teacher centre on every call; validation batches must leave it as training left it.
        center = None if self.training else self.criterion.center.detach().clone()
        # The student's first views are the teacher's, in the same order: DINOLoss leaves out those same-view pairs.
        loss = self.criterion(list(teacher), student, teacher_temp=self.hparams.teacher_temperature)
        if center is not None:
            self.criterion.center.copy_(center)
        return loss


def crop_scale(value: Sequence[float] | None, flag: str, allow_none: bool = False) -> tuple[float, float] | None:
    """A crop scale hyperparameter as ``(min, max)``; empty or None means the config's (where allowed)."""
    if value is None or len(value) == 0:
        if allow_none:
            return None
        raise UserError(f"{flag} needs two numbers min,max (area fractions), got none")
    if len(value) != 2 or not 0 < float(value[0]) <= float(value[1]) <= 1:
        shown = ",".join(f"{float(v):g}" for v in value)
        raise UserError(f"{flag} must be two area fractions min,max with 0 < min <= max <= 1, got {shown}")
    return float(value[0]), float(value[1])


def check_encoder_takes_other_sizes(encoder: nn.Module, encoder_name: str) -> None:
    """Local crops are smaller than the global views: a ViT built for one image size cannot embed them."""
    if getattr(encoder, "feature_layout", None) != "tokens":
        return  # CNNs pool whatever size they get
    network = getattr(encoder, "model", None)
    if getattr(network, "dynamic_img_size", False):
        return
    hint = (
        "add dynamic_img_size=true to --encoder_options (a timm ViT then interpolates its position embeddings)"
        if network is not None and hasattr(network, "dynamic_img_size")
        else "use a CNN or a timm ViT with --encoder_options=...,dynamic_img_size=true"
    )
    raise UserError(
        f"DINO's local crops are smaller than its global views, and {encoder_name} takes one image size: {hint}, "
        "or train two-view DINO with --dino_num_local_crops=0"
    )
