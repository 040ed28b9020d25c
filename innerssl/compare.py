"""Did pretraining help? Classifiers from SSL encoders vs from baseline encoders, over label fractions.

For each mode x label fraction x repeat (seed = random_seed + repeat) ``run_comparison`` evaluates every encoder
("init") of the comparison, each in an ordinary run folder
``<output_dir>/<model>/<comparison run>/<mode>_frac<fraction>_<init>_seed<seed>/``. The inits, in this order:

- the baselines of ``compare_baselines``: ``random`` (a seeded random encoder, the same in every mode) and
  ``imagenet`` (starting weights from ``compare_imagenet_weights``: the library's ImageNet weights or a file);
- ``pretrained``: the SSL encoder of ``local_weights_path``;
- one per ``compare_extra_checkpoints`` entry ``name=path``: further SSL checkpoints of the same encoder (e.g. SSL
  started from ImageNet weights), named ``name``.

The modes:

- ``frozen``: a linear probe (by default a logistic regression fitted to convergence on the embeddings, see
  :mod:`innerssl.eval.linear_probe`; ``--linear_probe_solver=adamw`` trains the head instead), then the test
  stage on the best-on-validation checkpoint;
- ``finetuned``: the whole network trained by AdamW, the same number of optimizer steps at every label
  fraction (see :mod:`innerssl.containers.classifier`), early-stopped on validation AUROC;
- ``knn``: kNN votes of the training embeddings, nothing trained (:mod:`innerssl.knn_evaluation`).

It then writes into the comparison folder ``comparison.csv`` (every child run's test metrics, its starting
weights, how its head was fitted and the steps it took), ``comparison.md`` (each init's mean ± std over repeats,
the AUROC difference and relative improvement of every SSL init over every baseline, steps, the settings) and
``comparison.png`` (test AUROC vs label fraction, one line per init and mode).
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

from innerssl.containers.classifier import PRETRAINED_INIT, SSLClassifierContainer  # noqa: E402
from innerssl.distributed import is_global_zero  # noqa: E402
from innerssl.errors import UserError  # noqa: E402
from innerssl.eval.classifier import METRIC_PREFIX  # noqa: E402
from innerssl.networks import create_encoder  # noqa: E402
from innerssl.networks.weights import NO_WEIGHTS, load_starting_weights  # noqa: E402
from innerssl.outputs.checkpoints import describe_encoder  # noqa: E402
from innerssl.outputs.run_folder import RunFolder, new_run_name  # noqa: E402

logger = logging.getLogger(__name__)

METRICS = ("auroc", "auprc", "accuracy")
RANDOM_INIT = "random"
IMAGENET_INIT = "imagenet"
INITS = (RANDOM_INIT, PRETRAINED_INIT)
"""The inits of a comparison with the default --compare_baselines=random and no extra checkpoints."""
INIT_LABELS = {RANDOM_INIT: "random-init", IMAGENET_INIT: "imagenet-init"}
"""How comparison.md and the chart name an init (others: by their name)."""
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


def baselines(container: SSLClassifierContainer) -> list[str]:
    """The baseline inits (``compare_baselines``), in order, each once."""
    return list(dict.fromkeys(container.compare_baselines))


def ssl_inits(container: SSLClassifierContainer) -> list[str]:
    """The SSL inits: ``pretrained`` (--local_weights_path), then the extra checkpoints' names."""
    return [PRETRAINED_INIT, *container.extra_checkpoints()]


def comparison_inits(container: SSLClassifierContainer) -> list[str]:
    """Every init of the comparison, in the order of its child runs and table columns."""
    return [*baselines(container), *ssl_inits(container)]


def init_label(init: str) -> str:
    return INIT_LABELS.get(init, init)


def starting_weights(container: SSLClassifierContainer, init: str) -> dict[str, Any]:
    """A child's parameters for ``init``: where its encoder starts (an SSL checkpoint, --encoder_weights, random)."""
    if init == RANDOM_INIT:
        return {"local_weights_path": None, "encoder_weights": NO_WEIGHTS}
    if init == IMAGENET_INIT:
        return {"local_weights_path": None, "encoder_weights": container.compare_imagenet_weights}
    if init == PRETRAINED_INIT:
        return {"local_weights_path": container.local_weights_path, "encoder_weights": NO_WEIGHTS}
    return {"local_weights_path": container.extra_checkpoints()[init], "encoder_weights": NO_WEIGHTS}


def weights_source(overrides: dict[str, Any]) -> str:
    """The ``weights`` column of comparison.csv: the SSL checkpoint, the weights (imagenet or a file) or none."""
    return str(overrides["local_weights_path"] or overrides["encoder_weights"])


def check_imagenet_weights(container: SSLClassifierContainer) -> None:
    """Load the imagenet baseline's weights into the encoder once before any child runs: a missing download, a
    file that is not a state dict or weights of another network fail now, naming --compare_imagenet_weights."""
    encoder = create_encoder(container.classifier_encoder_spec())
    load_starting_weights(encoder, container.compare_imagenet_weights, "--compare_imagenet_weights")


def child_container(container: SSLClassifierContainer, **overrides: Any) -> SSLClassifierContainer:
    """A copy of ``container`` with ``overrides``; never itself a comparison or a resumed run."""
    values = {name: getattr(container, name) for name in container.parameters()}
    values = {name: list(value) if isinstance(value, list) else value for name, value in values.items()}
    child = type(container)(**values)
    child.param.update(
        compare_with_random_init=False,
        compare_extra_checkpoints=[],
        resume=False,
        test_only_checkpoint=None,
        **overrides,
    )
    return child


def run_comparison(container: SSLClassifierContainer, model_name: str) -> Path:
    """Train every child run and write comparison.md / .png / .csv; returns the comparison folder."""
    from innerssl.knn_evaluation import run_knn_evaluation
    from innerssl.training import train

    if container.local_weights_path is None:
        raise UserError(
            "--compare_with_random_init needs --local_weights_path=<SSL run>/checkpoints/last.ckpt (the "
            "pretrained encoder to compare with a random one)"
        )
    container.validate()
    if IMAGENET_INIT in baselines(container):
        check_imagenet_weights(container)
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
        for init in comparison_inits(container)
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
        weights = starting_weights(container, init)
        child = child_container(
            container,
            freeze_encoder=mode != "finetuned",  # knn embeds with the frozen encoder too
            label_fraction=fraction,
            random_seed=seed,
            run_name=f"{comparison_name}/{name}",
            **weights,
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
            "weights": weights_source(weights),
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


def difference_columns(container: SSLClassifierContainer) -> list[tuple[str, str, str, str]]:
    """(SSL init, baseline, difference header, relative improvement header) for every SSL init x baseline; the one
    pair of the default comparison (pretrained vs random) keeps the plain headers."""
    pairs = [(ssl, baseline) for ssl in ssl_inits(container) for baseline in baselines(container)]
    if len(pairs) == 1:
        return [(*pairs[0], "AUROC difference", "AUROC relative improvement (%)")]
    return [
        (
            ssl,
            baseline,
            f"AUROC difference {init_label(ssl)} vs {init_label(baseline)}",
            f"AUROC relative improvement (%) {init_label(ssl)} vs {init_label(baseline)}",
        )
        for ssl, baseline in pairs
    ]


def encoder_settings(container: SSLClassifierContainer) -> str:
    """The settings line naming the encoder and where each init's weights come from."""
    sources = {
        RANDOM_INIT: "a seeded random encoder",
        IMAGENET_INIT: f"`--compare_imagenet_weights={container.compare_imagenet_weights}`",
        PRETRAINED_INIT: f"`{container.local_weights_path}`",
        **{name: f"`{path}`" for name, path in container.extra_checkpoints().items()},
    }
    inits = "; ".join(f"{init_label(init)}: {sources[init]}" for init in comparison_inits(container))
    return f"- encoder `{describe_encoder(container.classifier_encoder_spec())}`; starting weights: {inits}"


def comparison_markdown(table: pd.DataFrame, container: SSLClassifierContainer, model_name: str) -> str:
    inits = comparison_inits(container)
    differences = difference_columns(container)
    header = ["mode", "label fraction", "training images"]
    for init in inits:
        header += [f"{init_label(init)} {m.upper() if m != 'accuracy' else m}" for m in METRICS]
    for _ssl, _baseline, difference_header, improvement_header in differences:
        header += [difference_header, improvement_header]
    header.append(f"steps {' / '.join(inits)}")
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
        rows = {init: group[group["init"] == init] for init in inits}
        images = sorted({int(n) for n in group["num_train_images"].dropna()})
        cells = [str(mode), f"{fraction:g}", "/".join(str(n) for n in images) or "n/a"]
        for init in inits:
            cells += [format_mean_std(rows[init][m]) for m in METRICS]
        for ssl, baseline, _difference_header, _improvement_header in differences:
            baseline_auroc, ssl_auroc = mean_std(rows[baseline]["auroc"])[0], mean_std(rows[ssl]["auroc"])[0]
            difference = ssl_auroc - baseline_auroc
            improvement = difference / baseline_auroc * 100 if baseline_auroc > 0 else math.nan
            cells.append("n/a" if math.isnan(difference) else f"{difference:+.3f}")
            cells.append("n/a" if math.isnan(improvement) else f"{improvement:+.1f}")
        steps = group["steps"] if "steps" in group else pd.Series(np.nan, index=group.index)
        cells.append(" / ".join(format_steps(steps[rows[init].index]) for init in inits))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Settings",
        "",
        f"- model: `{model_name}`",
        encoder_settings(container),
        f"- labeled dataset: `{container.linear_head_dataset_name}`; label fractions "
        f"{', '.join(f'{f:g}' for f in container.label_fractions)}; repeats {container.num_repeats} "
        f"(seeds {container.random_seed}..{container.random_seed + container.num_repeats - 1}); modes "
        f"{', '.join(freeze_modes(container))}",
        *head_settings(container, table),
        "- every child run (with its config.yaml, metrics.csv, test_predictions.csv and charts/test_roc.png) is a "
        "subfolder; comparison.csv lists their test metrics, starting weights, head fit, steps and (linear probe) "
        "L2 strength",
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
        axis.errorbar(fractions, means, yerr=stds, marker="o", capsize=3, label=f"{init_label(str(init))}, {mode}")
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
