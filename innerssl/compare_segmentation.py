"""Did restoration pretraining help segmentation? The same segmentation run from a restoration checkpoint and from
random init, over training-set sizes (``--compare_num_training_images``) and seeds (``--compare_repeats``).

Child runs live in ``<output_dir>/<model>/<comparison run>/n<images>_<init>_seed<seed>/``; the comparison folder
gets ``comparison.csv`` (every child's test Dice), ``comparison.md`` (mean ± std per init and size, and the Dice
difference pretrained - random) and ``comparison.png`` (test Dice vs training images, one line per init). A killed
comparison continues with ``--resume``: finished children are kept (``finished_runs/``).
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
import pandas as pd  # noqa: E402

from innerssl.containers.segmentation import PRETRAINED_INIT, RANDOM_INIT, SegmentationContainer  # noqa: E402
from innerssl.distributed import is_global_zero  # noqa: E402
from innerssl.errors import UserError  # noqa: E402
from innerssl.eval.segmentation import PREFIX  # noqa: E402
from innerssl.outputs.run_folder import RunFolder, new_run_name  # noqa: E402

logger = logging.getLogger(__name__)

COMPARISON_CSV = "comparison.csv"
COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
CHILD_ROWS = "finished_runs"
INITS = (RANDOM_INIT, PRETRAINED_INIT)


def child_container(container: SegmentationContainer, **overrides: Any) -> SegmentationContainer:
    values = {name: getattr(container, name) for name in container.parameters()}
    values = {name: list(value) if isinstance(value, list) else value for name, value in values.items()}
    child = type(container)(**values)
    child.param.update(compare_with_random_init=False, resume=False, **overrides)
    return child


def run_segmentation_comparison(container: SegmentationContainer, model_name: str) -> Path:
    """Train every child and write comparison.csv / .md / .png; returns the comparison folder."""
    from innerssl.training import train

    container.validate()
    name = container.run_name or new_run_name()
    folder = container.output_root() / model_name / name
    continuing = container.resume or container.auto_resume
    if (folder / COMPARISON_CSV).exists() and not continuing:
        raise UserError(f"{folder} already holds a comparison: choose another --run_name")
    settings = [
        (count, init, container.random_seed + repeat)
        for count in container.compare_num_training_images
        for repeat in range(container.compare_repeats)
        for init in INITS
    ]
    rows: list[dict[str, Any]] = []
    for number, (count, init, seed) in enumerate(settings, start=1):
        child_name = f"n{count}_{init}_seed{seed}"
        finished = folder / CHILD_ROWS / f"{child_name}.json"
        if continuing and finished.is_file():
            rows.append(json.loads(finished.read_text(encoding="utf-8")))
            continue
        logger.info("Comparison run %d/%d: %d training image(s), %s, seed %d", number, len(settings), count, init, seed)
        child = child_container(
            container,
            num_training_images=count,
            random_seed=seed,
            run_name=f"{name}/{child_name}",
            # The random arm trains the checkpoint's own architecture (a UNETR around a pretrained ViT, say), not the
            # config's default network: otherwise the comparison would measure the architecture, not the weights.
            weights_part=container.weights_part if init == PRETRAINED_INIT else "none",
            freeze_encoder=container.freeze_encoder and init == PRETRAINED_INIT,
        )
        child.resume = continuing and RunFolder(folder / child_name).last_checkpoint.is_file()
        result = train(child, model_name)
        row = {
            "num_training_images": count,
            "init": init,
            "seed": seed,
            "test_dice": result.test_metrics.get(f"{PREFIX}/test_dice", math.nan),
            "val_dice": result.best_value if result.best_value is not None else math.nan,
            "run_folder": str(result.folder.root),
        }
        rows.append(row)
        if is_global_zero(container):
            finished.parent.mkdir(parents=True, exist_ok=True)
            finished.write_text(json.dumps(row), encoding="utf-8")
    table = pd.DataFrame(rows)
    if is_global_zero(container):
        folder.mkdir(parents=True, exist_ok=True)
        table.to_csv(folder / COMPARISON_CSV, index=False)
        (folder / COMPARISON_MD).write_text(comparison_markdown(table, container, model_name), encoding="utf-8")
        plot_comparison(table, folder / COMPARISON_PNG)
        logger.info("Segmentation comparison written to %s", folder)
    return folder


def mean_std(values: pd.Series) -> tuple[float, float]:
    finite = values.dropna()
    if finite.empty:
        return math.nan, math.nan
    return float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else 0.0


def comparison_markdown(table: pd.DataFrame, container: SegmentationContainer, model_name: str) -> str:
    lines = [
        f"# Segmentation: restoration-pretrained vs random init ({model_name})",
        "",
        f"Pretrained: `{container.local_weights_path}` (weights: {container.weights_part}"
        f"{', encoder frozen' if container.freeze_encoder else ''}); test Dice (mean over test images of the mean "
        f"Dice over foreground classes), mean ± std over {container.compare_repeats} seed(s). Random init trains "
        "the checkpoint's own network architecture without its weights. Training budget: "
        + (
            f"{container.patches_per_epoch} patches per epoch whatever the number of images"
            if container.patches_per_epoch is not None
            else f"{container.patches_per_image} patches per image per epoch (fewer images, fewer steps)"
        )
        + f", {container.num_epochs} epochs, batch {container.batch_size}.",
        "",
        "| training images | random init | pretrained | difference (pretrained - random) |",
        "| --- | --- | --- | --- |",
    ]
    for count, group in table.groupby("num_training_images"):
        random_mean, random_std = mean_std(group[group.init == RANDOM_INIT].test_dice)
        pre_mean, pre_std = mean_std(group[group.init == PRETRAINED_INIT].test_dice)
        lines.append(
            f"| {count} | {random_mean:.4f} ± {random_std:.4f} | {pre_mean:.4f} ± {pre_std:.4f} | "
            f"{pre_mean - random_mean:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def plot_comparison(table: pd.DataFrame, target: Path) -> None:
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for init in INITS:
        rows = table[table.init == init]
        counts = sorted(rows.num_training_images.unique())
        stats = [mean_std(rows[rows.num_training_images == count].test_dice) for count in counts]
        axis.errorbar(
            counts,
            [s[0] for s in stats],
            yerr=[s[1] for s in stats],
            marker="o",
            capsize=3,
            label="random init" if init == RANDOM_INIT else "restoration-pretrained",
        )
    axis.set_xlabel("training images")
    axis.set_ylabel("test Dice")
    axis.set_xticks(sorted(table.num_training_images.unique()))
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=120)
    plt.close(figure)
