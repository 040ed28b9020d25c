"""Does the quick-start demo's SSL beat a random encoder? Linear-probe test AUROC of DemoBYOL / DemoSimCLR encoders.

For every method and seed this runs the SSL config exactly as a user does (``python runner.py --model=Demo<method>
--random_seed=<seed>``, default settings unless flags are passed on), then evaluates its encoder (the checkpoint's
``last.ckpt``, read with :func:`innerssl.outputs.checkpoints.encoder_state_from_ssl_checkpoint`) by a linear probe:

1. the demo's labeled train, validation and test splits of that seed (the container's own dataset, so the split is
   the run's) are embedded once, with the linear-head config's preprocess only (no augmentation);
2. for every ``--label_fractions`` entry, an L2-regularised logistic regression is fitted to convergence on
   standardised features of that seeded, stratified fraction of the training split (the classifier's
   ``--label_fraction`` subset) by full-batch L-BFGS (:func:`innerssl.eval.linear_probe.fit_linear_probe`), the
   strength chosen by validation AUROC from a grid: what ``DemoClassifier --label_fraction=<f>`` fits;
3. the chosen model's test AUROC is the score.

The quick start's classifier uses 5% of the labels (64 images: labels are scarce, unlabeled images are not); PASS
is judged there (``--pass_fractions``). With all 1,280 labels a random ResNet-18 already reaches ~0.99 test AUROC
on the demo, which leaves no room for a gain of 0.03.

The baseline is the same probe on randomly initialised encoders of the same architecture (one per seed, paired
with the SSL run of that seed, so both see the same split). Prints per seed and mean +- std, the gain of each
method over random, the SSL wall time of each run and the machine's load, and a final PASS / FAIL line: PASS when
every method's mean test AUROC beats random's by at least ``--target_gain`` (default 0.03).

Examples::

    python benchmarks/demo_ssl_gain.py                                   # BYOL, SimCLR; seeds 1,2,3; 5% and all labels
    python benchmarks/demo_ssl_gain.py --methods=SimCLR --seeds=1 --num_epochs=2
    python benchmarks/demo_ssl_gain.py --random_only                     # the random-encoder rows only
    python benchmarks/demo_ssl_gain.py --reuse_runs                      # probe existing runs again, no SSL

Flags the script does not know (``--demo_num_images=400``, ``--learning_rate=1e-3``, ...) go to every SSL run and
to the container that builds the probe's dataset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from innerssl.containers.ssl import SSLContainer  # noqa: E402
from innerssl.data.datasets.base import DatasetSplits  # noqa: E402
from innerssl.data.pipeline import ImageStream  # noqa: E402
from innerssl.data.splits import label_fraction_subset  # noqa: E402
from innerssl.encoders import create_encoder  # noqa: E402
from innerssl.eval.embeddings import Embedded, embed_dataset, frozen_encoder_embedding  # noqa: E402
from innerssl.eval.linear_probe import fit_linear_probe  # noqa: E402
from innerssl.eval.metrics import classification_metrics, predicted_probabilities  # noqa: E402
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint  # noqa: E402
from innerssl.registry import find_model  # noqa: E402
from innerssl.runner import parse_flags  # noqa: E402

MODELS = {"BYOL": "DemoBYOL", "SimCLR": "DemoSimCLR"}
DEMO_LABEL_FRACTION = 0.05
"""The labeled share of the demo's training split that the quick start's classifier uses (DemoClassifier)."""
RANDOM = "random"
TIMING_FILE = "demo_ssl_gain_timing.json"
"""Written beside a run's checkpoints: the SSL run's wall time and machine load, for --reuse_runs."""
EMBEDDING_BATCH_SIZE = 128


@dataclass(frozen=True)
class ProbeResult:
    method: str
    seed: int
    label_fraction: float
    test_auroc: float
    val_auroc: float
    l2: float
    converged: bool
    ssl_seconds: float | None
    load_during_ssl: float | None
    """The 1-minute load average at the end of the SSL run (the machine's CPU count is printed beside it)."""


def probe_container(method: str, seed: int, runner_flags: list[str]) -> SSLContainer:
    """The SSL run's container (same flags and seed), which builds the labeled dataset and its preprocess."""
    container = find_model(MODELS.get(method, "DemoBYOL"), [])()
    assert isinstance(container, SSLContainer)
    container.apply_flags({**parse_flags(runner_flags), "random_seed": str(seed)})
    return container


def embed_splits(container: SSLContainer, encoder: nn.Module) -> dict[str, Embedded]:
    """Train, validation and test images through the linear-head preprocess (no augmentation) and the encoder."""
    splits: DatasetSplits | None = container.linear_head_splits()
    if splits is None or splits.test is None:
        raise SystemExit("The demo container has no labeled dataset with a test split")
    preprocess = container.augmentation("linear_head_augmentation_config").preprocess_only()
    stream = ImageStream(preprocess, container.in_channels, augment_on_device=False)
    embed_images = frozen_encoder_embedding(encoder)
    return {
        name: embed_dataset(
            stream.loader_dataset(getattr(splits, name)),
            embed_images,
            torch.device("cpu"),
            int(encoder.feature_dim),
            splits.label_info,
            batch_size=EMBEDDING_BATCH_SIZE,
        )
        for name in ("train", "val", "test")
    }


def labeled_subset(train: Embedded, fraction: float, seed: int) -> Embedded:
    """The seeded, stratified ``fraction`` of the training embeddings: the classifier's ``--label_fraction``."""
    classes = [int(label) for label in train.labels.tolist()]  # the demo's labels are binary (floats here)
    indices = torch.as_tensor(label_fraction_subset(classes, None, fraction, seed))
    return Embedded(train.features[indices], train.labels[indices])


def probe(
    container: SSLContainer, encoder: nn.Module, fractions: list[float], seed: int
) -> dict[float, tuple[float, float, float, bool]]:
    """Per label fraction: test AUROC, validation AUROC, chosen L2 and convergence of the probe on ``encoder``."""
    embedded = embed_splits(container, encoder)
    label_info = container.linear_head_splits().label_info  # type: ignore[union-attr]
    test = embedded["test"]
    results = {}
    for fraction in fractions:
        fit = fit_linear_probe(labeled_subset(embedded["train"], fraction, seed), embedded["val"], label_info)
        probabilities = predicted_probabilities(fit.logits(test.features), label_info)
        test_auroc = classification_metrics(probabilities, test.labels, label_info)["auroc"]
        results[fraction] = (test_auroc, fit.chosen.val_auroc, fit.l2, fit.chosen.fit.converged)
    return results


def run_ssl(method: str, seed: int, output_dir: Path, runner_flags: list[str], reuse: bool) -> tuple[Path, dict]:
    """``python runner.py --model=Demo<method> --random_seed=<seed>`` (plus flags); its last checkpoint and timing."""
    run_folder = output_dir / MODELS[method] / f"seed{seed}"
    checkpoint, timing_file = run_folder / "checkpoints" / "last.ckpt", run_folder / TIMING_FILE
    if reuse and checkpoint.is_file() and timing_file.is_file():
        return checkpoint, json.loads(timing_file.read_text())
    command = [
        sys.executable,
        "runner.py",
        f"--model={MODELS[method]}",
        f"--random_seed={seed}",
        f"--output_dir={output_dir}",
        f"--run_name=seed{seed}",
        *runner_flags,
    ]
    log_file = output_dir / f"{MODELS[method]}_seed{seed}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    print(f"SSL: {' '.join(command[1:])} (log {log_file})", flush=True)
    start = time.perf_counter()
    with log_file.open("w") as log:
        completed = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"The SSL run failed with exit code {completed.returncode}: see {log_file}")
    timing = {"seconds": seconds, "load_1min": os.getloadavg()[0], "cpus": os.cpu_count()}
    timing_file.write_text(json.dumps(timing))
    return checkpoint, timing


def ssl_results(
    method: str, seed: int, output_dir: Path, runner_flags: list[str], reuse: bool, fractions: list[float]
) -> list[ProbeResult]:
    checkpoint, timing = run_ssl(method, seed, output_dir, runner_flags, reuse)
    container = probe_container(method, seed, runner_flags)
    encoder = create_encoder(container.ssl_encoder, container.in_channels)
    encoder.load_state_dict(encoder_state_from_ssl_checkpoint(checkpoint, container.ssl_encoder, container.in_channels))
    return [
        ProbeResult(method, seed, fraction, *scores, timing["seconds"], timing["load_1min"])
        for fraction, scores in probe(container, encoder, fractions, seed).items()
    ]


def random_results(seed: int, runner_flags: list[str], fractions: list[float]) -> list[ProbeResult]:
    container = probe_container(RANDOM, seed, runner_flags)
    torch.manual_seed(seed)
    encoder = create_encoder(container.ssl_encoder, container.in_channels)
    return [
        ProbeResult(RANDOM, seed, fraction, *scores, None, None)
        for fraction, scores in probe(container, encoder, fractions, seed).items()
    ]


def mean_and_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def print_table(results: list[ProbeResult], seeds: list[int], target_gain: float, pass_fractions: list[float]) -> bool:
    """The table per label fraction, and whether every SSL method beats random by ``target_gain`` (mean test
    AUROC) at each of ``pass_fractions``."""
    methods = list(dict.fromkeys(result.method for result in results))
    fractions = list(dict.fromkeys(result.label_fraction for result in results))
    seed_columns = "  ".join(f"seed {seed:>2}" for seed in seeds)
    print(f"\n{'labels':>6}  {'encoder':<8}  {seed_columns}  {'mean +- std':>15}  {'gain':>7}  SSL minutes per run")
    passed = RANDOM in methods and len(methods) > 1
    for fraction in fractions:
        of_fraction = [r for r in results if r.label_fraction == fraction]
        random_scores = [r.test_auroc for r in of_fraction if r.method == RANDOM]
        random_mean = mean_and_std(random_scores)[0] if random_scores else None
        for method in methods:
            rows = {r.seed: r for r in of_fraction if r.method == method}
            aurocs = "  ".join(f"{rows[seed].test_auroc:7.3f}" if seed in rows else f"{'-':>7}" for seed in seeds)
            mean, std = mean_and_std([r.test_auroc for r in rows.values()])
            gain = "" if method == RANDOM or random_mean is None else f"{mean - random_mean:+7.3f}"
            times = ", ".join(f"{r.ssl_seconds / 60:.2f}" for r in rows.values() if r.ssl_seconds is not None)
            print(f"{fraction:>6g}  {method:<8}  {aurocs}  {mean:7.3f} +- {std:5.3f}  {gain:>7}  {times}")
            failed = random_mean is None or mean - random_mean < target_gain
            if method != RANDOM and fraction in pass_fractions and failed:
                passed = False
    print("\nPer run: validation AUROC of the chosen probe, its L2 strength, converged; load at the end of SSL")
    for r in results:
        load = f", load {r.load_during_ssl:.2f} on {os.cpu_count()} CPUs" if r.load_during_ssl is not None else ""
        print(
            f"  {r.method:<8} seed {r.seed} labels {r.label_fraction:g}: val {r.val_auroc:.3f}, L2 {r.l2:g}, "
            f"converged {r.converged}{load}"
        )
    return passed


def fraction_list(text: str) -> list[float]:
    fractions = [float(part) for part in text.split(",") if part.strip()]
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise SystemExit(f"label fractions must be in (0, 1], got {text}")
    return fractions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="BYOL,SimCLR", help="comma-separated: BYOL, SimCLR")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated --random_seed values")
    parser.add_argument("--num_epochs", type=int, help="override the configs' SSL epochs")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "demo_ssl_gain")
    parser.add_argument("--target_gain", type=float, default=0.03, help="mean test AUROC gain over random needed")
    parser.add_argument(
        "--label_fractions",
        default=f"{DEMO_LABEL_FRACTION:g},1.0",
        help="comma-separated fractions of the labeled training split the probe is fitted on (seeded, stratified)",
    )
    parser.add_argument(
        "--pass_fractions",
        default=f"{DEMO_LABEL_FRACTION:g}",
        help="the label fractions at which every method must beat random by --target_gain for PASS",
    )
    parser.add_argument("--random_only", action="store_true", help="only the random-encoder rows (no SSL runs)")
    parser.add_argument("--reuse_runs", action="store_true", help="probe existing runs of --output_dir again")
    arguments, runner_flags = parser.parse_known_args()
    if arguments.num_epochs is not None:
        runner_flags.append(f"--num_epochs={arguments.num_epochs}")
    methods = [] if arguments.random_only else [m.strip() for m in arguments.methods.split(",") if m.strip()]
    unknown = [method for method in methods if method not in MODELS]
    if unknown:
        raise SystemExit(f"Unknown methods {unknown}: choose from {', '.join(MODELS)}")
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    fractions = fraction_list(arguments.label_fractions)
    pass_fractions = fraction_list(arguments.pass_fractions)
    torch.set_num_threads(os.cpu_count() or 1)

    print(f"Load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    results = [result for seed in seeds for result in random_results(seed, runner_flags, fractions)]
    for method in methods:
        for seed in seeds:
            new = ssl_results(method, seed, arguments.output_dir, runner_flags, arguments.reuse_runs, fractions)
            results += new
            scores = ", ".join(f"{r.test_auroc:.3f} at {r.label_fraction:g}" for r in new)
            print(f"  {method} seed {seed}: test AUROC {scores}", flush=True)
    passed = print_table(results, seeds, arguments.target_gain, pass_fractions)
    print(f"Load average at end: {os.getloadavg()}")
    if not methods:
        return 0
    shown = ", ".join(f"{f:g}" for f in pass_fractions)
    print(
        f"{'PASS' if passed else 'FAIL'}: every SSL method's mean test AUROC beats the random encoder's by >= "
        f"{arguments.target_gain} at label fraction {shown}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
