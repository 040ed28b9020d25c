"""Classification losses and metrics (AUROC, AUPRC, accuracy) for binary, multiclass and multilabel tasks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torchmetrics.functional.classification import (
    binary_accuracy,
    binary_auroc,
    binary_average_precision,
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_average_precision,
    multilabel_accuracy,
    multilabel_auroc,
    multilabel_average_precision,
)

from innerssl.data.datasets.base import LabelInfo


def positive_class_weight(labels: Sequence[int]) -> float:
    """negatives / positives, the BCE ``pos_weight`` that balances a binary task's two classes."""
    array = np.asarray(labels)
    positives = int((array == 1).sum())
    negatives = int((array == 0).sum())
    if positives == 0 or negatives == 0:
        return 1.0
    return negatives / positives


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo, positive_weight: float | None = None
) -> torch.Tensor:
    """Cross-entropy for multiclass; BCE for binary (optionally class-balanced) and multilabel (NaN ignored)."""
    if label_info.task == "multiclass":
        return torch.nn.functional.cross_entropy(logits, targets.long())
    if label_info.task == "binary":
        weight = None if positive_weight is None else torch.tensor(positive_weight, device=logits.device)
        return torch.nn.functional.binary_cross_entropy_with_logits(
            logits.squeeze(1), targets.float(), pos_weight=weight
        )
    if label_info.task == "multilabel":
        known = ~torch.isnan(targets)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[known], targets[known])
    raise ValueError(f"No classification loss for task {label_info.task}")


def predicted_probabilities(logits: torch.Tensor, label_info: LabelInfo) -> torch.Tensor:
    if label_info.task == "multiclass":
        return logits.softmax(dim=1)
    if label_info.task == "binary":
        return logits.squeeze(1).sigmoid()
    return logits.sigmoid()


def classification_metrics(
    probabilities: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo
) -> dict[str, float]:
    """AUROC, AUPRC (average precision) and accuracy; NaN where undefined (e.g. one class only)."""
    probabilities = probabilities.float().cpu()
    targets = targets.cpu()
    nan = math.nan
    if label_info.task == "binary":
        targets = targets.long()
        accuracy = binary_accuracy(probabilities, targets).item()
        if targets.unique().numel() < 2:
            return {"auroc": nan, "auprc": nan, "accuracy": accuracy}
        return {
            "auroc": binary_auroc(probabilities, targets).item(),
            "auprc": binary_average_precision(probabilities, targets).item(),
            "accuracy": accuracy,
        }
    if label_info.task == "multiclass":
        targets = targets.long()
        num_classes = probabilities.shape[1]
        return {
            "auroc": multiclass_auroc(probabilities, targets, num_classes).item(),
            "auprc": multiclass_average_precision(probabilities, targets, num_classes).item(),
            "accuracy": multiclass_accuracy(probabilities, targets, num_classes, average="micro").item(),
        }
    # Multilabel: ignore unknown (NaN) observations by marking them with ignore_index.
    ignore = -1
    targets = torch.nan_to_num(targets, nan=ignore).long()
    num_labels = probabilities.shape[1]
    return {
        "auroc": multilabel_auroc(probabilities, targets, num_labels, ignore_index=ignore).item(),
        "auprc": multilabel_average_precision(probabilities, targets, num_labels, ignore_index=ignore).item(),
        "accuracy": multilabel_accuracy(probabilities, targets, num_labels, ignore_index=ignore).item(),
    }


class EpochPredictions:
    """Predictions collected over an epoch, turned into metrics (gathered across processes) at its end."""

    def __init__(self, label_info: LabelInfo) -> None:
        self.label_info = label_info
        self._items: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def reset(self) -> None:
        self._items = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, logits: torch.Tensor, targets: torch.Tensor, loss: torch.Tensor) -> None:
        probabilities = predicted_probabilities(logits.detach().float(), self.label_info)
        self._items.append((probabilities, targets.detach(), loss.detach().float().reshape(1)))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities and targets added since the last reset, in the order they were added (this process)."""
        probabilities = torch.cat([p for p, _, _ in self._items]).cpu()
        targets = torch.cat([t for _, t, _ in self._items]).cpu()
        return probabilities, targets

    def compute(self, all_gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, float]:
        """Loss, AUROC, AUPRC and accuracy over everything added since the last reset."""
        items, self._items = self._items, []
        probabilities = torch.cat([p for p, _, _ in items])
        targets = torch.cat([t for _, t, _ in items])
        losses = torch.cat([loss for _, _, loss in items])
        if all_gather is not None:
            probabilities = all_gather(probabilities).flatten(0, 1)
            targets = all_gather(targets).flatten(0, 1)
            losses = all_gather(losses).flatten()
        metrics = classification_metrics(probabilities, targets, self.label_info)
        metrics["loss"] = losses.mean().item()
        return metrics

    def log_epoch(self, module: pl.LightningModule, prefix: str, split: str, prog_bar_metric: str = "") -> None:
        """Log ``<prefix>/<split>_<metric>`` for the epoch through ``module``; nothing when nothing was added.

        Under DDP the predictions of every process are gathered first, so the values are equal on all of them:
        ``sync_dist`` then only averages equal values (and tells Lightning the value is global).
        """
        if not len(self):
            return
        distributed = module.trainer.world_size > 1
        for name, value in self.compute(module.all_gather if distributed else None).items():
            module.log(
                f"{prefix}/{split}_{name}",
                value,
                on_epoch=True,
                add_dataloader_idx=False,
                sync_dist=distributed,
                prog_bar=name == prog_bar_metric,
            )
