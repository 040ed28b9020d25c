"""PNG charts of the per-epoch metrics in metrics.csv: one chart per metric, train and val together."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

SPLITS = ("train", "val", "test")


def metric_groups(columns: list[str]) -> dict[str, dict[str, str]]:
    """Map 'prefix/metric' to {line label: column} for columns named 'prefix/<split>_<metric>' (label: the split).

    A column 'prefix/<split>_<qualifier>_<metric>' whose 'prefix/<split>_<metric>' also exists joins that metric's
    chart as the line '<split> <qualifier>': a restoration's baseline (``val_input_psnr`` beside ``val_psnr``) is
    drawn with the metric it is the baseline of."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    present = set(columns)
    for column in columns:
        prefix, slash, rest = column.rpartition("/")
        split, _, metric = rest.partition("_")
        if split not in SPLITS or not metric:
            continue
        qualifier, _, base_metric = metric.rpartition("_")
        if qualifier and f"{prefix}{slash}{split}_{base_metric}" in present:
            groups[f"{prefix}/{base_metric}" if prefix else base_metric][f"{split} {qualifier}"] = column
        else:
            groups[f"{prefix}/{metric}" if prefix else metric][split] = column
    return dict(groups)


def plot_metrics(metrics_csv: Path, charts_dir: Path) -> list[Path]:
    """Write one PNG per metric group; returns the files written."""
    if not metrics_csv.is_file():
        return []
    table = pd.read_csv(metrics_csv)
    if "epoch" not in table or table.empty:
        return []
    charts_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for group, columns in sorted(metric_groups(list(table.columns)).items()):
        figure, axis = plt.subplots(figsize=(6, 4))
        for split, column in columns.items():
            values = table[["epoch", column]].dropna()
            if not values.empty:
                axis.plot(values["epoch"], values[column], marker="o", label=split)
        axis.set_xlabel("epoch")
        axis.set_ylabel(group)
        axis.set_title(group)
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        target = charts_dir / f"{group.replace('/', '_')}.png"
        figure.savefig(target, dpi=100)
        plt.close(figure)
        written.append(target)
    return written
