"""Is the comparison's frozen linear probe converged? Its test AUROC against an independent logistic regression.

Runs a label-fraction comparison (``python runner.py --compare_with_random_init ...`` with the flags given here),
or reads one (``--comparison_folder``), and for every frozen linear-probe child run re-creates the same labeled
subset (the child's config.yaml: dataset, ``--label_fraction``, seed), embeds its training, validation and test
images with the child's checkpointed encoder (a plain loop, not innerssl's embedding code) and fits the
reference of ``tests/eval/logistic_reference.py``: binary logistic regression by Newton's method in NumPy
float64, gradient below 1e-10, on features standardised by the reference itself, with the L2 strength chosen by
its own validation AUROC over the same grid. Also shown: the reference at scikit-learn's default strength
(C = 1, i.e. L2 = 1 / training images), no choice on validation.

Prints per child run and per (fraction, encoder) mean: the comparison's test AUROC, the reference's, their
difference; the wall time of the comparison and of the reference. Exits 1 when a child run's test AUROC is
further than ``--tolerance`` (default 0.02) from the reference's. Binary tasks only.

Examples::

    python benchmarks/linear_probe_convergence.py --model=DemoClassifier --label_fractions=0.05,0.2,1.0 \\
        --num_repeats=2 --local_weights_path=outputs/DemoSimCLR/<run>/checkpoints/last.ckpt
    python benchmarks/linear_probe_convergence.py --comparison_folder=outputs/DemoClassifier/<comparison run>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import DataLoader

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from innerssl.containers.classifier import SSLClassifierContainer  # noqa: E402
from innerssl.outputs.checkpoints import load_checkpoint  # noqa: E402
from innerssl.outputs.run_folder import new_run_name  # noqa: E402
from innerssl.registry import find_model  # noqa: E402
from innerssl.runner import main as runner_main  # noqa: E402
from tests.eval.logistic_reference import auroc, newton_logistic_regression, reference_probe  # noqa: E402


def flag_value(argv: list[str], name: str) -> str | None:
    for index, item in enumerate(argv):
        if item.startswith(f"--{name}="):
            return item.split("=", 1)[1]
        if item == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def run_comparison(argv: list[str]) -> Path:
    """The comparison of ``argv`` (runner flags), frozen mode unless modes are given; returns its folder."""
    argv = list(argv)
    if flag_value(argv, "run_name") is None:
        argv.append(f"--run_name=probe-check-{new_run_name()}")
    if flag_value(argv, "compare_freeze_modes") is None:
        argv.append("--compare_freeze_modes=frozen")
    if "--compare_with_random_init" not in argv:
        argv.append("--compare_with_random_init")
    if runner_main(argv) != 0:
        raise SystemExit("the comparison failed")
    model = flag_value(argv, "model")
    return Path(flag_value(argv, "output_dir") or "outputs") / str(model) / str(flag_value(argv, "run_name"))


def child_container(run_folder: Path) -> SSLClassifierContainer:
    """The child run's container, from its config.yaml."""
    config = yaml.safe_load((run_folder / "config.yaml").read_text())
    container = find_model(config.pop("model"), [])()
    assert isinstance(container, SSLClassifierContainer)
    known = container.parameters()
    container.param.update(**{name: value for name, value in config.items() if name in known})
    return container


def embeddings(encoder: torch.nn.Module, dataset: Any, stream: Any, device: torch.device) -> tuple[np.ndarray, ...]:
    """Every image of ``dataset`` through the eval stream and the encoder (eval mode, no_grad), in order."""
    encoder.eval()
    features, labels = [], []
    with torch.no_grad():
        for images, targets in DataLoader(stream.loader_dataset(dataset), batch_size=128):
            images = images.to(device)
            features.append(encoder(stream.to_encoder(images) if stream.on_device else images).double().cpu())
            labels.append(torch.as_tensor(targets).double())
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def reference_row(row: pd.Series, comparison: Path, device: torch.device) -> dict[str, Any]:
    run_folder = comparison / Path(row["run_folder"]).name
    container = child_container(run_folder)
    datamodule = container.create_datamodule()
    splits, stream = datamodule.splits, datamodule.eval_stream
    if splits.label_info.task != "binary":
        raise SystemExit(f"{run_folder}: the reference handles binary tasks only, not {splits.label_info.task}")
    state = load_checkpoint(run_folder / "checkpoints" / "best.ckpt")["state_dict"]
    encoder = container.create_encoder()
    encoder.load_state_dict({k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")})
    encoder.to(device)
    train, val, test = (embeddings(encoder, getattr(splits, s), stream, device) for s in ("train", "val", "test"))
    positive_weight = container.positive_weight(splits, container.use_balanced_binary_loss_for_classifier)
    probe = reference_probe(train, val, tuple(container.linear_probe_l2_grid), positive_weight)
    scale = np.where(train[0].std(axis=0) < 1e-8, 1.0, train[0].std(axis=0))
    standardised = [(x - train[0].mean(axis=0)) / scale for x in (train[0], test[0])]
    sklearn_default = newton_logistic_regression(standardised[0], train[1], 1 / len(train[1]), positive_weight)
    return {
        "mode": row["mode"],
        "fraction": row["label_fraction"],
        "init": row["init"],
        "seed": row["seed"],
        "images": len(train[1]),
        "probe_l2": row["l2"],
        "reference_l2": probe.l2,
        "probe_iterations": row["steps"],
        "probe_auroc": row["auroc"],
        "reference_auroc": auroc(probe.logits(test[0]), test[1]),
        "c1_auroc": auroc(sklearn_default.logits(standardised[1]), test[1]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparison_folder", type=Path, help="an existing comparison to check (no runs)")
    parser.add_argument("--tolerance", type=float, default=0.02, help="largest allowed |test AUROC difference|")
    arguments, runner_flags = parser.parse_known_args()
    start = time.perf_counter()
    comparison = arguments.comparison_folder or run_comparison(runner_flags)
    comparison_seconds = time.perf_counter() - start if arguments.comparison_folder is None else float("nan")

    table = pd.read_csv(comparison / "comparison.csv")
    probes = table[table["head"] == "lbfgs"]
    if probes.empty:
        raise SystemExit(f"{comparison} has no frozen linear-probe runs (head lbfgs)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    rows = pd.DataFrame([reference_row(row, comparison, device) for _, row in probes.iterrows()])
    reference_seconds = time.perf_counter() - start
    rows["difference"] = rows["probe_auroc"] - rows["reference_auroc"]

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"\nComparison: {comparison}")
    print(rows.to_string(index=False, float_format=lambda value: f"{value:.4f}"))
    summary = rows.groupby(["fraction", "init"], sort=False).agg(
        images=("images", "first"),
        probe_auroc=("probe_auroc", "mean"),
        reference_auroc=("reference_auroc", "mean"),
        c1_auroc=("c1_auroc", "mean"),
        difference=("difference", "mean"),
    )
    print("\nMean over repeats (test AUROC):")
    print(summary.to_string(float_format=lambda value: f"{value:.4f}"))
    worst = float(rows["difference"].abs().max())
    print(f"\nlargest |probe - reference| test AUROC of a run: {worst:.4f} (tolerance {arguments.tolerance})")
    print(
        f"wall time: comparison {comparison_seconds:.1f} s, reference (embedding + Newton fits) "
        f"{reference_seconds:.1f} s"
    )
    return 0 if worst <= arguments.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
