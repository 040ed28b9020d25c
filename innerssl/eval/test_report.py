"""The classifier's test stage: evaluate a checkpoint on the test split, write per-image predictions and ROC curves.

``<run>/test_predictions.csv`` has one row per test image (index, image path where the dataset has files,
target(s), predicted probability(ies)); ``<run>/charts/test_roc.png`` the ROC curve(s) with AUROC in the legend.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torchmetrics.functional.classification import binary_auroc, binary_roc  # noqa: E402

from innerssl.data.datasets.base import LabelInfo  # noqa: E402

logger = logging.getLogger(__name__)

TEST_PREDICTIONS_CSV = "test_predictions.csv"
TEST_ROC_PNG = "test_roc.png"
MAX_ROC_CURVES = 15
TEST_METRIC_PREFIX = "classifier/test_"


def class_names(label_info: LabelInfo, count: int) -> list[str]:
    names = list(label_info.class_names)
    return names if len(names) == count else [str(i) for i in range(count)]


def predictions_table(
    probabilities: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo, paths: list[Any] | None
) -> pd.DataFrame:
    """One row per image: index, path (when known), target(s), probability(ies)."""
    table: dict[str, Any] = {"index": list(range(len(probabilities)))}
    if paths is not None and len(paths) == len(probabilities):
        table["path"] = [str(p) for p in paths]
    if label_info.task == "binary":
        table["target"] = targets.long().tolist()
        table["probability"] = probabilities.reshape(-1).tolist()
    elif label_info.task == "multiclass":
        table["target"] = targets.long().tolist()
        for column, name in enumerate(class_names(label_info, probabilities.shape[1])):
            table[f"probability_{name}"] = probabilities[:, column].tolist()
    else:
        names = class_names(label_info, probabilities.shape[1])
        for column, name in enumerate(names):
            table[f"target_{name}"] = targets[:, column].tolist()
        for column, name in enumerate(names):
            table[f"probability_{name}"] = probabilities[:, column].tolist()
    return pd.DataFrame(table)


def roc_curves(
    probabilities: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo
) -> list[tuple[str, torch.Tensor, torch.Tensor, float]]:
    """(name, false positive rates, true positive rates, AUROC) per curve; classes with one outcome only skipped."""
    if label_info.task == "binary":
        pairs = [("positive", probabilities.reshape(-1), targets.long())]
    else:
        names = class_names(label_info, probabilities.shape[1])
        pairs = []
        for column, name in enumerate(names[:MAX_ROC_CURVES]):
            if label_info.task == "multiclass":
                pairs.append((name, probabilities[:, column], (targets.long() == column).long()))
            else:
                known = ~torch.isnan(targets[:, column])
                pairs.append((name, probabilities[known, column], targets[known, column].long()))
    curves = []
    for name, scores, truth in pairs:
        if truth.numel() == 0 or truth.unique().numel() < 2:
            continue
        fpr, tpr, _ = binary_roc(scores.float(), truth)
        curves.append((name, fpr, tpr, binary_auroc(scores.float(), truth).item()))
    return curves


def plot_roc(curves: list[tuple[str, torch.Tensor, torch.Tensor, float]], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(6, 5))
    for name, fpr, tpr, auroc in curves:
        axis.plot(fpr.numpy(), tpr.numpy(), label=f"{name} (AUROC {auroc:.3f})")
    axis.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    axis.set_title("Test ROC" if curves else "Test ROC (undefined: one class only)")
    axis.grid(alpha=0.3)
    if curves:
        axis.legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)


def write_test_report(
    run_folder: Path,
    probabilities: torch.Tensor,
    targets: torch.Tensor,
    label_info: LabelInfo,
    test_dataset: Any,
) -> None:
    records = getattr(test_dataset, "records", None)
    paths = [record.path for record in records] if records is not None else None
    predictions_table(probabilities, targets, label_info, paths).to_csv(run_folder / TEST_PREDICTIONS_CSV, index=False)
    plot_roc(roc_curves(probabilities, targets, label_info), run_folder / "charts" / TEST_ROC_PNG)
    logger.info("Test predictions: %s; ROC curves: %s", run_folder / TEST_PREDICTIONS_CSV, run_folder / "charts")


def run_test_stage(
    trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, checkpoint: Path, run_folder: Path | None
) -> dict[str, float]:
    """``trainer.test`` on ``checkpoint``; returns the ``classifier/test_*`` metrics and, when ``run_folder`` is
    given (global rank 0), writes the predictions CSV and the ROC chart there (single-process runs only: under
    DDP each process sees a share of the test set, so only the metrics, gathered across processes, are kept)."""
    logger.info("Test stage: evaluating %s on the test split", checkpoint)
    results = trainer.test(module, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    metrics = {
        name: float(value)
        for name, value in (results[0] if results else {}).items()
        if name.startswith(TEST_METRIC_PREFIX)
    }
    logger.info("Test metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
    predictions = getattr(module, "test_predictions", None)
    if run_folder is not None and predictions is not None:
        if trainer.world_size > 1:
            logger.warning("%s is not written under DDP (each process holds a share)", TEST_PREDICTIONS_CSV)
        else:
            write_test_report(run_folder, *predictions, module.label_info, datamodule.splits.test)
    return metrics
