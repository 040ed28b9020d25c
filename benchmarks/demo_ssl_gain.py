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
    python benchmarks/demo_ssl_gain.py --models=DemoDINO,DemoViTBYOL,DemoMAE --seeds=1   # the method x encoder table

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
from innerssl.eval.embeddings import Embedded, embed_dataset, frozen_encoder_embedding  # noqa: E402
from innerssl.eval.linear_probe import fit_linear_probe  # noqa: E402
from innerssl.eval.metrics import classification_metrics, predicted_probabilities  # noqa: E402
from innerssl.networks import EncoderSpec, create_encoder  # noqa: E402
from innerssl.outputs.checkpoints import format_encoder_options, ssl_checkpoint_encoder  # noqa: E402
from innerssl.registry import find_model  # noqa: E402
from innerssl.runner import parse_flags  # noqa: E402
from innerssl.ssl import METHODS  # noqa: E402
from innerssl.ssl.parameters import method_parameters  # noqa: E402

MODELS = {"BYOL": "DemoBYOL", "SimCLR": "DemoSimCLR"}
"""--methods: the quick start's methods and their configs (--models takes any SSL config instead)."""
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


def flags_for(model: str, runner_flags: list[str]) -> dict[str, str | None]:
    """The passed-on flags that ``model`` takes: a flag of another SSL method than its own (the tiny heads of a
    projection method, for MAE) is left out; any other unknown flag stops the run as it would the runner."""
    container = find_model(model, [])()
    known = type(container).parameters()
    method_flags = {flag for name in METHODS.names() for flag in method_parameters(METHODS.get(name))}
    return {
        name: value for name, value in parse_flags(runner_flags).items() if name in known or name not in method_flags
    }


def probe_container(model: str, seed: int, runner_flags: list[str]) -> SSLContainer:
    """The SSL run's container (same flags and seed), which builds the labeled dataset and its preprocess."""
    container = find_model(model, [])()
    assert isinstance(container, SSLContainer)
    container.apply_flags({**flags_for(model, runner_flags), "random_seed": str(seed)})
    return container


def spec_key(spec: EncoderSpec) -> tuple:
    """An encoder spec as a dictionary key: the same weights' shapes, the same key (a timm ViT's dynamic_* options
    only let it take other image sizes)."""
    shaping = {key: value for key, value in spec.options.items() if not key.startswith("dynamic_")}
    return (spec.name, spec.in_channels, spec.spatial_dims, tuple(sorted(shaping.items())))


def random_label(spec: EncoderSpec, several: bool) -> str:
    """The random baseline's row name: ``random``, or with its encoder where the table has several (the options
    that change the weights' shapes: patch and image size)."""
    if not several:
        return RANDOM
    shaping = {key: value for key, value in spec.options.items() if not key.startswith("dynamic_")}
    options = f" {format_encoder_options(shaping)}" if shaping else ""
    return f"{RANDOM} ({spec.model_name}{options})"


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


def run_ssl(model: str, seed: int, output_dir: Path, runner_flags: list[str], reuse: bool) -> tuple[Path, dict]:
    """``python runner.py --model=<model> --random_seed=<seed>`` (plus flags); its last checkpoint and timing."""
    run_folder = output_dir / model / f"seed{seed}"
    checkpoint, timing_file = run_folder / "checkpoints" / "last.ckpt", run_folder / TIMING_FILE
    if reuse and checkpoint.is_file() and timing_file.is_file():
        return checkpoint, json.loads(timing_file.read_text())
    passed_on = [
        f"--{name}" if value is None else f"--{name}={value}" for name, value in flags_for(model, runner_flags).items()
    ]
    command = [
        sys.executable,
        "runner.py",
        f"--model={model}",
        f"--random_seed={seed}",
        f"--output_dir={output_dir}",
        f"--run_name=seed{seed}",
        *passed_on,
    ]
    log_file = output_dir / f"{model}_seed{seed}.log"
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
    label: str,
    model: str,
    seed: int,
    output_dir: Path,
    runner_flags: list[str],
    reuse: bool,
    fractions: list[float],
) -> list[ProbeResult]:
    checkpoint, timing = run_ssl(model, seed, output_dir, runner_flags, reuse)
    container = probe_container(model, seed, runner_flags)
    spec, state = ssl_checkpoint_encoder(checkpoint)  # the encoder exactly as the run built it
    encoder = create_encoder(spec)
    encoder.load_state_dict(state)
    return [
        ProbeResult(label, seed, fraction, *scores, timing["seconds"], timing["load_1min"])
        for fraction, scores in probe(container, encoder, fractions, seed).items()
    ]


def random_results(
    label: str, model: str, seed: int, runner_flags: list[str], fractions: list[float]
) -> list[ProbeResult]:
    """The probe on a seeded random encoder of ``model``'s architecture, on the data of ``model``'s runs."""
    container = probe_container(model, seed, runner_flags)
    torch.manual_seed(seed)
    encoder = create_encoder(container.encoder_spec())
    return [
        ProbeResult(label, seed, fraction, *scores, None, None)
        for fraction, scores in probe(container, encoder, fractions, seed).items()
    ]


def mean_and_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def print_table(
    results: list[ProbeResult],
    seeds: list[int],
    target_gain: float,
    pass_fractions: list[float],
    baseline_of: dict[str, str],
) -> bool:
    """The table per label fraction, and whether every SSL row beats its random encoder (``baseline_of``: the
    random row of the same architecture) by ``target_gain`` (mean test AUROC) at each of ``pass_fractions``."""
    rows_in_order = list(dict.fromkeys(result.method for result in results))
    fractions = list(dict.fromkeys(result.label_fraction for result in results))
    width = max(8, *(len(name) for name in rows_in_order))
    seed_columns = "  ".join(f"seed {seed:>2}" for seed in seeds)
    print(
        f"\n{'labels':>6}  {'encoder':<{width}}  {seed_columns}  {'mean +- std':>15}  {'gain':>7}  SSL minutes per run"
    )
    trained = [name for name in rows_in_order if name in baseline_of]
    passed = bool(trained)
    for fraction in fractions:
        of_fraction = [r for r in results if r.label_fraction == fraction]
        for name in rows_in_order:
            rows = {r.seed: r for r in of_fraction if r.method == name}
            aurocs = "  ".join(f"{rows[seed].test_auroc:7.3f}" if seed in rows else f"{'-':>7}" for seed in seeds)
            mean, std = mean_and_std([r.test_auroc for r in rows.values()])
            baseline = [r.test_auroc for r in of_fraction if r.method == baseline_of.get(name)]
            baseline_mean = mean_and_std(baseline)[0] if baseline else None
            gain = "" if baseline_mean is None else f"{mean - baseline_mean:+7.3f}"
            times = ", ".join(f"{r.ssl_seconds / 60:.2f}" for r in rows.values() if r.ssl_seconds is not None)
            print(f"{fraction:>6g}  {name:<{width}}  {aurocs}  {mean:7.3f} +- {std:5.3f}  {gain:>7}  {times}")
            failed = baseline_mean is None or mean - baseline_mean < target_gain
            if name in baseline_of and fraction in pass_fractions and failed:
                passed = False
    print("\nPer run: validation AUROC of the chosen probe, its L2 strength, converged; load at the end of SSL")
    for r in results:
        load = f", load {r.load_during_ssl:.2f} on {os.cpu_count()} CPUs" if r.load_during_ssl is not None else ""
        print(
            f"  {r.method:<{width}} seed {r.seed} labels {r.label_fraction:g}: val {r.val_auroc:.3f}, L2 {r.l2:g}, "
            f"converged {r.converged}{load}"
        )
    return passed


def plot_results(results: list[ProbeResult], baseline_of: dict[str, str], path: Path) -> None:
    """Mean test AUROC per row and label fraction as grouped bars; each SSL row's random baseline as a dash."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r.method for r in results))
    fractions = list(dict.fromkeys(r.label_fraction for r in results))
    figure, axis = plt.subplots(figsize=(min(14, max(6, 0.45 * len(names) * len(fractions))), 5))
    width = 0.8 / len(fractions)
    for index, fraction in enumerate(fractions):
        means = [
            statistics.fmean(r.test_auroc for r in results if r.method == n and r.label_fraction == fraction)
            for n in names
        ]
        positions = [i + (index - (len(fractions) - 1) / 2) * width for i in range(len(names))]
        axis.bar(positions, means, width, label=f"{fraction:g} of the labels")
        for position, name in zip(positions, names):
            baseline = [
                r.test_auroc for r in results if r.method == baseline_of.get(name) and r.label_fraction == fraction
            ]
            if baseline:
                axis.hlines(statistics.fmean(baseline), position - width / 2, position + width / 2, colors="black")
    short = [name if len(name) <= 28 else f"{name[:12]}…{name[-15:]}" for name in names]  # keeps the patch size
    axis.set_xticks(range(len(names)), short, rotation=35, ha="right", fontsize=8)
    axis.set_ylabel("linear-probe test AUROC")
    axis.set_ylim(0.4, 1.0)
    axis.set_title("Demo: SSL encoders vs random (black dash: the random encoder of the same architecture)", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def fraction_list(text: str) -> list[float]:
    fractions = [float(part) for part in text.split(",") if part.strip()]
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise SystemExit(f"label fractions must be in (0, 1], got {text}")
    return fractions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="BYOL,SimCLR", help="comma-separated: BYOL, SimCLR")
    parser.add_argument(
        "--models",
        default="",
        help="comma-separated SSL configs instead of --methods (e.g. DemoDINO,DemoViTBYOL,DemoMAE): rows are named by "
        "model, and each architecture gets its own random row",
    )
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
    if arguments.models:
        rows = {model.strip(): model.strip() for model in arguments.models.split(",") if model.strip()}
    else:
        methods = [m.strip() for m in arguments.methods.split(",") if m.strip()]
        unknown = [method for method in methods if method not in MODELS]
        if unknown:
            raise SystemExit(f"Unknown methods {unknown}: choose from {', '.join(MODELS)} (or pass --models)")
        rows = {method: MODELS[method] for method in methods}
    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    fractions = fraction_list(arguments.label_fractions)
    pass_fractions = fraction_list(arguments.pass_fractions)
    torch.set_num_threads(os.cpu_count() or 1)

    # One random row per architecture among the rows (the quick start's: one ResNet-18).
    specs = {label: probe_container(model, seeds[0], runner_flags).encoder_spec() for label, model in rows.items()}
    if not rows:
        specs = {RANDOM: probe_container(MODELS["BYOL"], seeds[0], runner_flags).encoder_spec()}
    keys = {label: spec_key(spec) for label, spec in specs.items()}
    distinct = {key: spec for key, spec in zip(keys.values(), specs.values())}
    random_rows = {key: random_label(spec, len(distinct) > 1) for key, spec in distinct.items()}
    baseline_of = {label: random_rows[key] for label, key in keys.items() if label in rows}
    model_of_key = {key: rows.get(label, MODELS["BYOL"]) for label, key in reversed(list(keys.items()))}

    print(f"Load average at start: {os.getloadavg()} on {os.cpu_count()} CPUs", flush=True)
    results = [
        result
        for key, label in random_rows.items()
        for seed in seeds
        for result in random_results(label, model_of_key[key], seed, runner_flags, fractions)
    ]
    for label, model in [] if arguments.random_only else list(rows.items()):
        for seed in seeds:
            new = ssl_results(label, model, seed, arguments.output_dir, runner_flags, arguments.reuse_runs, fractions)
            results += new
            scores = ", ".join(f"{r.test_auroc:.3f} at {r.label_fraction:g}" for r in new)
            print(f"  {label} seed {seed}: test AUROC {scores}", flush=True)
    if arguments.random_only:
        baseline_of = {}
    passed = print_table(results, seeds, arguments.target_gain, pass_fractions, baseline_of)
    chart = arguments.output_dir / "demo_ssl_gain.png"
    plot_results(results, baseline_of, chart)
    print(f"Chart: {chart}")
    print(f"Load average at end: {os.getloadavg()}")
    if not baseline_of:
        return 0
    shown = ", ".join(f"{f:g}" for f in pass_fractions)
    print(
        f"{'PASS' if passed else 'FAIL'}: every SSL row's mean test AUROC beats its random encoder's by >= "
        f"{arguments.target_gain} at label fraction {shown}"
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
