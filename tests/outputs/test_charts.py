import pandas as pd
import torch

from innerssl.outputs.charts import metric_groups, plot_metrics
from innerssl.outputs.metrics_csv import epoch_metrics


def test_metric_groups_pair_train_and_val():
    groups = metric_groups(["epoch", "ssl/train_loss", "ssl/val_loss", "linear_head/val_auroc", "ssl/byol_momentum"])
    assert groups == {
        "ssl/loss": {"train": "ssl/train_loss", "val": "ssl/val_loss"},
        "linear_head/auroc": {"val": "linear_head/val_auroc"},
    }


def test_plot_metrics_writes_one_png_per_metric(tmp_path):
    csv = tmp_path / "metrics.csv"
    pd.DataFrame(
        {"epoch": [0, 1], "ssl/train_loss": [1.0, 0.5], "ssl/val_loss": [1.1, 0.7], "linear_head/val_auroc": [0.6, 0.7]}
    ).to_csv(csv, index=False)
    written = plot_metrics(csv, tmp_path / "charts")
    assert sorted(p.name for p in written) == ["linear_head_auroc.png", "ssl_loss.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_epoch_metrics_drop_step_values_and_suffixes():
    metrics = epoch_metrics(
        {
            "a/train_loss_step": torch.tensor(1.0),
            "a/train_loss_epoch": torch.tensor(2.0),
            "a/val_auroc": torch.tensor(0.5),
        }
    )
    assert metrics == {"a/train_loss": 2.0, "a/val_auroc": 0.5}
