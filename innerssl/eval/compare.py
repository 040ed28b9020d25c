"""Did pretraining help? Classifiers from the SSL encoder vs from a random encoder, over label fractions.

For each freeze mode x label fraction x repeat (seed = random_seed + repeat) ``run_comparison`` trains two
classifiers, one from ``local_weights_path`` and one from a random encoder, each an ordinary run (with its
test stage on the best-on-validation checkpoint) in
``<output_dir>/<model>/<comparison run>/<mode>_frac<fraction>_<init>_seed<seed>/``. It then writes into the
comparison folder ``comparison.csv`` (every child run's test metrics), ``comparison.md`` (mean ± std over
repeats, relative AUROC improvement, the settings) and ``comparison.png`` (test AUROC vs label fraction).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from innerssl.containers.classifier import SSLClassifierContainer  # noqa: E402
from innerssl.distributed import is_global_zero  # noqa: E402
from innerssl.errors import UserError  # noqa: E402
from innerssl.outputs.run_folder import new_run_name  # noqa: E402

logger = logging.getLogger(__name__)

METRICS = ("auroc", "auprc", "accuracy")
INITS = ("random", "pretrained")
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
COMPARISON_CSV = "comparison.csv"


def freeze_modes(container: SSLClassifierContainer) -> list[str]:
    if container.compare_freeze_modes:
        return list(dict.fromkeys(container.compare_freeze_modes))
    return ["frozen" if container.freeze_encoder else "finetuned"]


def child_run_name(mode: str, fraction: float, init: str, seed: int) -> str:
    return f"{mode}_frac{fraction:g}_{init}_seed{seed}"


def child_container(container: SSLClassifierContainer, **overrides: Any) -> SSLClassifierContainer:
    """A copy of ``container`` with ``overrides``; never itself a comparison or a resumed run."""
    values = {name: getattr(container, name) for name in container.parameters()}
    values = {name: list(value) if isinstance(value, list) else value for name, value in values.items()}
    child = type(container)(**values)
    child.param.update(compare_with_random_init=False, resume=False, test_only_checkpoint=None, **overrides)
    return child


def run_comparison(container: SSLClassifierContainer, model_name: str) -> Path:
    """Train every child run and write comparison.md / .png / .csv; returns the comparison folder."""
    from innerssl.training import train

    if container.local_weights_path is None:
        raise UserError(
            "--compare_with_random_init needs --local_weights_path=<SSL run>/checkpoints/last.ckpt (the "
            "pretrained encoder to compare with a random one)"
        )
    container.validate()
    comparison_name = container.run_name or new_run_name()
    folder = container.output_root() / model_name / comparison_name
    if (folder / COMPARISON_CSV).exists():
        raise UserError(f"{folder} already holds a comparison: choose another --run_name")
    settings = [
        (mode, fraction, init, container.random_seed + repeat)
        for mode in freeze_modes(container)
        for fraction in container.label_fractions
        for repeat in range(container.num_repeats)
        for init in INITS
    ]
    rows = []
    for number, (mode, fraction, init, seed) in enumerate(settings, start=1):
        name = child_run_name(mode, fraction, init, seed)
        logger.info(
            "Comparison run %d/%d: %s, fraction %g, %s, seed %d", number, len(settings), mode, fraction, init, seed
        )
        child = child_container(
            container,
            freeze_encoder=mode == "frozen",
            label_fraction=fraction,
            random_seed=seed,
            local_weights_path=container.local_weights_path if init == "pretrained" else None,
            run_name=f"{comparison_name}/{name}",
        )
        result = train(child, model_name)
        row: dict[str, Any] = {
            "mode": mode,
            "label_fraction": fraction,
            "init": init,
            "seed": seed,
            "num_train_images": result.num_train_images,
            "run_folder": str(result.folder.root),
        }
        for metric in (*METRICS, "loss"):
            row[metric] = result.test_metrics.get(f"classifier/test_{metric}", math.nan)
        rows.append(row)
    table = pd.DataFrame(rows)
    if is_global_zero(container):
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / COMPARISON_CSV, index=False)
        (folder / COMPARISON_MD).write_text(comparison_markdown(table, container, model_name), encoding="utf-8")
        plot_comparison(table, folder / COMPARISON_PNG)
        logger.info("Comparison written to %s", folder)
    return folder


def mean_std(values: pd.Series) -> tuple[float, float]:
    array = values.to_numpy(dtype=float)
    std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
    return float(np.mean(array)), std


def format_mean_std(values: pd.Series) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"


def comparison_markdown(table: pd.DataFrame, container: SSLClassifierContainer, model_name: str) -> str:
    header = ["mode", "label fraction", "training images"]
    header += [f"random-init {m.upper() if m != 'accuracy' else m}" for m in METRICS]
    header += [f"pretrained {m.upper() if m != 'accuracy' else m}" for m in METRICS]
    header.append("AUROC relative improvement (%)")
    lines = [
        f"# Did pretraining help? {model_name}",
        "",
        "Test-split metrics of the best-on-validation checkpoint"
        + (f", mean ± std over {container.num_repeats} seeds." if container.num_repeats > 1 else " (one seed)."),
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for (mode, fraction), group in table.groupby(["mode", "label_fraction"], sort=False):
        random = group[group["init"] == "random"]
        pretrained = group[group["init"] == "pretrained"]
        images = sorted({int(n) for n in group["num_train_images"].dropna()})
        cells = [str(mode), f"{fraction:g}", "/".join(str(n) for n in images) or "n/a"]
        cells += [format_mean_std(random[m]) for m in METRICS]
        cells += [format_mean_std(pretrained[m]) for m in METRICS]
        random_auroc, pretrained_auroc = mean_std(random["auroc"])[0], mean_std(pretrained["auroc"])[0]
        improvement = (pretrained_auroc - random_auroc) / random_auroc * 100 if random_auroc > 0 else math.nan
        cells.append("n/a" if math.isnan(improvement) else f"{improvement:+.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Settings",
        "",
        f"- model: `{model_name}`; encoder `{container.ssl_encoder}`; pretrained weights "
        f"`{container.local_weights_path}`",
        f"- labeled dataset: `{container.linear_head_dataset_name}`; label fractions "
        f"{', '.join(f'{f:g}' for f in container.label_fractions)}; repeats {container.num_repeats} "
        f"(seeds {container.random_seed}..{container.random_seed + container.num_repeats - 1})",
        f"- freeze modes: {', '.join(freeze_modes(container))}; epochs {container.num_epochs}; learning rate "
        f"{container.learning_rate}; batch size {container.linear_head_batch_size}; weight decay "
        f"{container.weight_decay}",
        "- every child run (with its config.yaml, metrics.csv, test_predictions.csv and charts/test_roc.png) is a "
        "subfolder; comparison.csv lists their test metrics",
        "",
    ]
    return "\n".join(lines)


def plot_comparison(table: pd.DataFrame, target: Path) -> None:
    figure, axis = plt.subplots(figsize=(6, 4))
    for (mode, init), group in table.groupby(["mode", "init"], sort=False):
        fractions = np.array(sorted(group["label_fraction"].unique()), dtype=float)
        stats = [mean_std(group.loc[group["label_fraction"] == fraction, "auroc"]) for fraction in fractions]
        means = np.array([mean for mean, _ in stats])
        stds = np.array([std for _, std in stats])
        axis.errorbar(fractions, means, yerr=stds, marker="o", capsize=3, label=f"{init}, {mode}")
    axis.set_xscale("log")
    ticks = sorted(table["label_fraction"].unique())
    axis.set_xticks(ticks, [f"{tick:g}" for tick in ticks])
    axis.minorticks_off()
    axis.set_xlabel("label fraction (log scale)")
    axis.set_ylabel("test AUROC")
    axis.set_title("Test AUROC vs label fraction")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=100)
    plt.close(figure)
