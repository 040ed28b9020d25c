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
    """Map 'prefix/metric' to {split: column} for columns named 'prefix/<split>_<metric>'."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for column in columns:
        prefix, _, rest = column.rpartition("/")
        split, _, metric = rest.partition("_")
        if split in SPLITS and metric:
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
