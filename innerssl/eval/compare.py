"""Did pretraining help? Classifiers from the SSL encoder vs from a random encoder, over label fractions.

For each mode x label fraction x repeat (seed = random_seed + repeat) ``run_comparison`` evaluates two encoders,
the one of ``local_weights_path`` and a random one, each in an ordinary run folder
``<output_dir>/<model>/<comparison run>/<mode>_frac<fraction>_<init>_seed<seed>/``:

- ``frozen``: a linear probe (by default a logistic regression fitted to convergence on the embeddings, see
  :mod:`innerssl.eval.linear_probe`; ``--linear_probe_solver=adamw`` trains the head instead), then the test
  stage on the best-on-validation checkpoint;
- ``finetuned``: the whole network trained by AdamW, the same number of optimizer steps at every label
  fraction (see :mod:`innerssl.containers.classifier`), early-stopped on validation AUROC;
- ``knn``: kNN votes of the training embeddings, nothing trained (:mod:`innerssl.eval.knn_evaluation`).

It then writes into the comparison folder ``comparison.csv`` (every child run's test metrics, how its head was
fitted and the steps it took), ``comparison.md`` (mean ± std over repeats, AUROC difference and relative
improvement, steps, the settings) and ``comparison.png`` (test AUROC vs label fraction).
"""

from __future__ import annotations

import json
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
from innerssl.eval.classifier import METRIC_PREFIX  # noqa: E402
from innerssl.outputs.run_folder import RunFolder, new_run_name  # noqa: E402

logger = logging.getLogger(__name__)

METRICS = ("auroc", "auprc", "accuracy")
INITS = ("random", "pretrained")
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
COMPARISON_CSV = "comparison.csv"
CHILD_ROWS = "finished_runs"
"""Subfolder with one JSON row per finished child run: what --resume of a killed comparison keeps."""
KNN_MODE = "knn"
HEAD_FITS = {
    "lbfgs": "logistic regression on the embeddings, L-BFGS to convergence (steps: its iterations)",
    "adamw": "AdamW (steps: optimizer steps taken)",
    "knn": "kNN votes, nothing trained",
}
"""What the ``head`` column of comparison.csv means, and what its ``steps`` count."""


def head_fit(container: SSLClassifierContainer, mode: str) -> str:
    """How a child of ``mode`` gets its predictions: a key of ``HEAD_FITS``."""
    if mode == KNN_MODE:
        return "knn"
    return "lbfgs" if mode == "frozen" and container.linear_probe_solver == "lbfgs" else "adamw"


def training_steps(metrics_csv: Path, head: str, l2_grid: list[float]) -> dict[str, float]:
    """From a child's metrics.csv: ``steps`` (optimizer steps taken; the probe's L-BFGS iterations; 0 for kNN),
    ``steps_per_epoch`` and ``best_step`` (AdamW: the step of the best validation AUROC) and ``l2`` (the probe's
    chosen strength, the entry of ``l2_grid`` it was logged as); NaN where a value does not apply or the file is
    missing."""
    values = dict.fromkeys(("steps", "steps_per_epoch", "best_step", "l2"), math.nan)
    if head == "knn":
        return {**values, "steps": 0.0}
    if not metrics_csv.is_file():
        return values
    table = pd.read_csv(metrics_csv)
    if table.empty:
        return values
    if head == "lbfgs":
        for key, column in (("steps", "probe_iterations"), ("l2", "probe_l2")):
            if f"{METRIC_PREFIX}/{column}" in table:
                values[key] = float(table[f"{METRIC_PREFIX}/{column}"].iloc[-1])
        if values["l2"] > 0 and l2_grid:
            # Logged metrics are float32: 3.16 comes back as 3.1600000858.
            values["l2"] = min(l2_grid, key=lambda l2: abs(math.log(l2 / values["l2"])))
        return values
    values["steps"] = float(table["step"].iloc[-1])
    values["steps_per_epoch"] = float(table["step"].iloc[0])
    auroc = f"{METRIC_PREFIX}/val_auroc"
    if auroc in table and table[auroc].notna().any():
        values["best_step"] = float(table.loc[table[auroc].idxmax(), "step"])
    return values


def freeze_modes(container: SSLClassifierContainer) -> list[str]:
    """The comparison's modes (``compare_freeze_modes``, else the one ``freeze_encoder`` sets), in order."""
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
    from innerssl.eval.knn_evaluation import run_knn_evaluation
    from innerssl.training import train

    if container.local_weights_path is None:
        raise UserError(
            "--compare_with_random_init needs --local_weights_path=<SSL run>/checkpoints/last.ckpt (the "
            "pretrained encoder to compare with a random one)"
        )
    container.validate()
    comparison_name = container.run_name or new_run_name()
    folder = container.output_root() / model_name / comparison_name
    continuing = container.resume or container.auto_resume
    if (folder / COMPARISON_CSV).exists() and not continuing:
        raise UserError(f"{folder} already holds a comparison: choose another --run_name")
    if (folder / CHILD_ROWS).is_dir() and any((folder / CHILD_ROWS).iterdir()) and not continuing:
        raise UserError(
            f"{folder} holds an unfinished comparison: add --resume (with --run_name={comparison_name}) to continue "
            "it, or choose another --run_name"
        )
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
        finished = folder / CHILD_ROWS / f"{name}.json"
        if continuing and finished.is_file():
            rows.append(json.loads(finished.read_text(encoding="utf-8")))
            logger.info("Comparison run %d/%d (%s) finished before: its results are kept", number, len(settings), name)
            continue
        logger.info(
            "Comparison run %d/%d: %s, fraction %g, %s, seed %d", number, len(settings), mode, fraction, init, seed
        )
        child = child_container(
            container,
            freeze_encoder=mode != "finetuned",  # knn embeds with the frozen encoder too
            label_fraction=fraction,
            random_seed=seed,
            local_weights_path=container.local_weights_path if init == "pretrained" else None,
            run_name=f"{comparison_name}/{name}",
        )
        # A child killed mid-training continues from its own last.ckpt (an epoch end or a timed checkpoint).
        child.resume = continuing and mode != KNN_MODE and RunFolder(folder / name).last_checkpoint.is_file()
        result = run_knn_evaluation(child, model_name) if mode == KNN_MODE else train(child, model_name)
        head = head_fit(container, mode)
        row: dict[str, Any] = {
            "mode": mode,
            "label_fraction": fraction,
            "init": init,
            "seed": seed,
            "num_train_images": result.num_train_images,
            "head": head,
            **training_steps(result.folder.metrics_csv, head, container.linear_probe_l2_grid),
            "val_auroc": result.best_value if result.best_value is not None else math.nan,
            "run_folder": str(result.folder.root),
        }
        for metric in (*METRICS, "loss"):
            row[metric] = result.test_metrics.get(f"{METRIC_PREFIX}/test_{metric}", math.nan)
        rows.append(row)
        if is_global_zero(container):  # kept, so that a killed comparison resumes after the last finished child
            finished.parent.mkdir(parents=True, exist_ok=True)
            finished.write_text(json.dumps(row, default=_plain), encoding="utf-8")
    table = pd.DataFrame(rows)
    if is_global_zero(container):
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / COMPARISON_CSV, index=False)
        (folder / COMPARISON_MD).write_text(comparison_markdown(table, container, model_name), encoding="utf-8")
        plot_comparison(table, folder / COMPARISON_PNG)
        logger.info("Comparison written to %s", folder)
    return folder


def _plain(value: Any) -> Any:
    """NumPy scalars as Python numbers, for the JSON rows."""
    return value.item() if hasattr(value, "item") else str(value)


def mean_std(values: pd.Series) -> tuple[float, float]:
    array = values.to_numpy(dtype=float)
    std = float(np.std(array, ddof=1)) if len(array) > 1 else 0.0
    return float(np.mean(array)), std


def format_mean_std(values: pd.Series) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.3f}" if len(values) == 1 else f"{mean:.3f} ± {std:.3f}"


def format_steps(values: pd.Series) -> str:
    """Mean steps over repeats, as a whole number (with the range when the repeats differ)."""
    array = values.dropna().to_numpy(dtype=float)
    if len(array) == 0:
        return "n/a"
    low, high = int(array.min()), int(array.max())
    return f"{array.mean():.0f}" + (f" ({low}-{high})" if low != high else "")


def head_settings(container: SSLClassifierContainer, table: pd.DataFrame) -> list[str]:
    """One line per kind of head fit in ``table``: what it did and its budget."""
    lines = []
    heads = list(dict.fromkeys(table["head"])) if "head" in table else []
    if "lbfgs" in heads:
        passes = container.linear_probe_augmented_passes
        augmented = f", plus {passes} augmented passes" if passes else ""
        lines.append(
            f"- frozen (linear probe): the training images embedded once (eval preprocess{augmented}), standardised, "
            "a logistic regression fitted by full-batch L-BFGS to a gradient below 1e-6 (at most "
            f"{container.linear_probe_max_iterations} iterations) for each L2 strength of "
            f"{', '.join(f'{l2:g}' for l2 in container.linear_probe_l2_grid)}; the best on validation AUROC is kept "
            "(comparison.csv: `l2`, and `steps` = its iterations)"
        )
    if "adamw" in heads:
        adamw = table[table["head"] == "adamw"]
        per_epoch = sorted({int(n) for n in adamw["steps_per_epoch"].dropna()})
        budget = f"{container.num_epochs} epochs"
        if per_epoch:
            totals = "/".join(str(container.num_epochs * n) for n in per_epoch)
            budget += f" x {'/'.join(str(n) for n in per_epoch)} steps = {totals} optimizer steps"
        patience = container.classifier_early_stopping_patience
        stopping = (
            f"early stopping after {patience} epochs without a better validation AUROC"
            if patience
            else "no early stopping"
        )
        lines.append(
            f"- AdamW ({', '.join(sorted(set(adamw['mode'])))}): {budget} at most, the same at every label fraction "
            f"(a subset is cycled through); {stopping}; learning rate {container.learning_rate}, batch size "
            f"{container.linear_head_batch_size}, weight decay {container.weight_decay}, warmup "
            f"{container.warmup_epochs} epochs, then cosine decay"
        )
    if "knn" in heads:
        lines.append(
            f"- knn: each test image classified by its {container.knn_k} nearest training embeddings (cosine), "
            f"votes weighted by exp(similarity / {container.knn_temperature}); nothing trained"
        )
    return lines


def comparison_markdown(table: pd.DataFrame, container: SSLClassifierContainer, model_name: str) -> str:
    header = ["mode", "label fraction", "training images"]
    header += [f"random-init {m.upper() if m != 'accuracy' else m}" for m in METRICS]
    header += [f"pretrained {m.upper() if m != 'accuracy' else m}" for m in METRICS]
    header += ["AUROC difference", "AUROC relative improvement (%)", "steps random / pretrained"]
    lines = [
        f"# Did pretraining help? {model_name}",
        "",
        "Test-split metrics (trained heads: of the best-on-validation checkpoint)"
        + (f", mean ± std over {container.num_repeats} seeds." if container.num_repeats > 1 else " (one seed).")
        + " Steps: optimizer steps taken (AdamW), L-BFGS iterations of the chosen fit (frozen linear probe), 0 (knn).",
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
        difference = pretrained_auroc - random_auroc
        improvement = difference / random_auroc * 100 if random_auroc > 0 else math.nan
        cells.append("n/a" if math.isnan(difference) else f"{difference:+.3f}")
        cells.append("n/a" if math.isnan(improvement) else f"{improvement:+.1f}")
        steps = group["steps"] if "steps" in group else pd.Series(dtype=float)
        cells.append(f"{format_steps(steps[random.index])} / {format_steps(steps[pretrained.index])}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Settings",
        "",
        f"- model: `{model_name}`; encoder `{container.ssl_encoder}`; pretrained weights "
        f"`{container.local_weights_path}`",
        f"- labeled dataset: `{container.linear_head_dataset_name}`; label fractions "
        f"{', '.join(f'{f:g}' for f in container.label_fractions)}; repeats {container.num_repeats} "
        f"(seeds {container.random_seed}..{container.random_seed + container.num_repeats - 1}); modes "
        f"{', '.join(freeze_modes(container))}",
        *head_settings(container, table),
        "- every child run (with its config.yaml, metrics.csv, test_predictions.csv and charts/test_roc.png) is a "
        "subfolder; comparison.csv lists their test metrics, head fit, steps and (linear probe) L2 strength",
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
