"""Online linear-head monitor: how linearly separable the SSL embeddings are, measured while training.

A linear classifier is trained on detached embeddings of a separate labeled dataset, with its own
optimizer and learning rate (as InnerEye's SSLOnlineEvaluator, done right):
- the encoder runs in eval mode under ``no_grad`` for these batches, so neither its weights nor its
  BatchNorm running statistics are changed by them;
- the head's weights and optimizer state are part of the checkpoint (``state_dict``) and restored on
  resume;
- under DDP the head's gradients are averaged across processes and predictions gathered for metrics.

Training batches are dicts with the labeled batch under ``batch_key``; validation batches come from
validation dataloader ``val_dataloader_index``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from innerssl.data.batches import LINEAR_HEAD_BATCH_KEY, LINEAR_HEAD_VAL_DATALOADER_INDEX
from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.metrics import EpochPredictions, classification_loss

METRIC_PREFIX = "linear_head"


@contextlib.contextmanager
def frozen_eval_mode(module: nn.Module):  # noqa: ANN201
    """Eval mode and no gradients inside; the previous training mode is restored on exit."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def embed(pl_module: pl.LightningModule, images: torch.Tensor) -> torch.Tensor:
    """Embeddings of ``images`` by the module's downstream encoder, without touching its state."""
    encoder = pl_module.embedding_encoder()
    if pl_module.hparams.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
    with frozen_eval_mode(encoder), pl_module.trainer.precision_plugin.forward_context():
        return encoder(images).float()


def average_gradients_across_processes(module: nn.Module, world_size: int) -> None:
    """Replace every gradient of ``module`` by its mean over the DDP processes (one all-reduce for all).

    Each process then takes the same optimizer step from the same weights, so the weights stay identical.
    """
    parameters = [p for p in module.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for parameter in parameters:
        count = parameter.grad.numel()
        parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
        offset += count


class OnlineLinearHead(pl.Callback):
    """Trains and evaluates a linear classifier on frozen embeddings during SSL training."""

    def __init__(
        self,
        label_info: LabelInfo,
        learning_rate: float,
        weight_decay: float = 0.0,
        positive_weight: float | None = None,
        seed: int = 0,
    ) -> None:
        self.label_info = label_info
        self.seed = seed
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.positive_weight = positive_weight
        self.head: nn.Linear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._predictions = {split: EpochPredictions(label_info) for split in ("train", "val")}

    # --- state -------------------------------------------------------------------------------------
    def _ensure_head(self, pl_module: pl.LightningModule) -> nn.Linear:
        if self.head is None:
            # Initialised from its own seed, not the global random stream (which differs between processes
            # once data loading has drawn from it): every DDP process starts from the same head, and the
            # training's random stream is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(self.seed)
                self.head = nn.Linear(pl_module.feature_dim, self.label_info.num_outputs)
        if next(self.head.parameters()).device != pl_module.device or self.optimizer is None:
            self.head.to(pl_module.device)
            self.optimizer = torch.optim.AdamW(
                self.head.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay
            )
            if self._pending_state is not None:
                self.head.load_state_dict(self._pending_state["head"])
                self.optimizer.load_state_dict(self._pending_state["optimizer"])
                self._pending_state = None
        return self.head

    def state_dict(self) -> dict[str, Any]:
        if self.head is None or self.optimizer is None:
            return dict(self._pending_state or {})
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._pending_state = state_dict
        if self.head is not None:
            self.optimizer = None  # re-created and loaded on next use, on the right device

    # --- steps ---------------------------------------------------------------------------------------
    def _forward(self, pl_module: pl.LightningModule, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images, targets = batch
        head = self._ensure_head(pl_module)
        logits = head(embed(pl_module, images))
        return logits, targets

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, dict) or LINEAR_HEAD_BATCH_KEY not in batch:
            return
        logits, targets = self._forward(pl_module, batch[LINEAR_HEAD_BATCH_KEY])
        loss = classification_loss(logits, targets, self.label_info, self.positive_weight)
        assert self.optimizer is not None and self.head is not None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.world_size > 1:
            average_gradients_across_processes(self.head, trainer.world_size)
        self.optimizer.step()
        self._predictions["train"].add(logits, targets, loss)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != LINEAR_HEAD_VAL_DATALOADER_INDEX:
            return
        with torch.no_grad():
            logits, targets = self._forward(pl_module, batch)
            loss = classification_loss(logits, targets, self.label_info, self.positive_weight)
        self._predictions["val"].add(logits, targets, loss)

    # --- epoch metrics -------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["val"].reset()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["val"].log_epoch(pl_module, METRIC_PREFIX, "val")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["train"].reset()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["train"].log_epoch(pl_module, METRIC_PREFIX, "train")
