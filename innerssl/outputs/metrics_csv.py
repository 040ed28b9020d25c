"""A Lightning callback that writes one row per epoch to metrics.csv and redraws the charts."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch

from innerssl.outputs.charts import plot_metrics

STEP_SUFFIX = "_step"
EPOCH_SUFFIX = "_epoch"


def epoch_metrics(callback_metrics: dict[str, torch.Tensor]) -> dict[str, float]:
    """Epoch-level values only, without Lightning's '_epoch' suffix; per-step values are dropped."""
    metrics = {}
    for name, value in callback_metrics.items():
        if name.endswith(STEP_SUFFIX):
            continue
        if name.endswith(EPOCH_SUFFIX):
            name = name[: -len(EPOCH_SUFFIX)]
        metrics[name] = float(value) if torch.is_tensor(value) and value.numel() == 1 else math.nan
    return metrics


class EpochMetricsWriter(pl.Callback):
    """Keep this callback last so the metrics other callbacks log at epoch end are included."""

    def __init__(self, metrics_csv: Path, charts_dir: Path) -> None:
        self.metrics_csv = metrics_csv
        self.charts_dir = charts_dir

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(epoch_metrics(trainer.callback_metrics))
        table = pd.read_csv(self.metrics_csv) if self.metrics_csv.is_file() else pd.DataFrame()
        if not table.empty:
            # On resume an epoch may be repeated: keep only rows before it.
            table = table[table["epoch"] < trainer.current_epoch]
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        self.metrics_csv.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(self.metrics_csv, index=False)
        plot_metrics(self.metrics_csv, self.charts_dir)
