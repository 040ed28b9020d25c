"""Do the SSL monitors tell the truth? Per epoch: the online linear head, the kNN monitor and a converged linear probe.

For every seed this trains an SSL model as ``python runner.py --model=NAME`` would (in this process, same flags),
with one extra callback that keeps a copy of each epoch's ``last.ckpt`` as ``checkpoints/epoch<N>.ckpt`` (the run
itself keeps only ``last.ckpt`` and ``best.ckpt``; training is otherwise untouched, so the schedule is that of one
uninterrupted run). Then, for each epoch's checkpoint:

- **online**: the online linear head's validation AUROC, ``linear_head/val_auroc`` of ``metrics.csv``;
- **kNN**: the kNN monitor's, ``knn/val_auroc``;
- **offline**: a linear probe trained to convergence on the frozen embeddings of that checkpoint's encoder: the
  labeled training split and the validation split through the run's own eval stream (preprocess only, no
  augmentation), an L2-regularised logistic regression on standardised features fitted by full-batch L-BFGS for
  every strength of a grid, the strength chosen by validation AUROC (the project's frozen linear probe,
  :func:`innerssl.eval.linear_probe.fit_linear_probe`; binary tasks use the run's balanced loss when the run does);
- the gap online - offline, and the noise of a validation split of this size: a bootstrap 95% interval (2,000
  resamples of the validation images) of the offline AUROC and, where the online head can be rebuilt from the
  checkpoint (its weights are in the callback state), of the paired gap online - offline on the same resamples;
- the cost of the monitors, timed in the run: the SSL training step, the online head's work per step
  (``on_train_batch_end``) and its and the kNN monitor's work per validation.

A final PASS / FAIL line: PASS when ``|online - offline| <= --tolerance`` (default 0.03) for every seed from epoch
``--from_epoch`` (default 2, counting from 1) on.

Examples::

    python benchmarks/monitor_fidelity.py                                # DemoSimCLR, its own settings and seed
    python benchmarks/monitor_fidelity.py --nih_sample --seeds=1,2,3     # NIH_BYOL on ../shared/data/nih-sample
    python benchmarks/monitor_fidelity.py --model=DemoBYOL --num_epochs=4 --seeds=1,2
    python benchmarks/monitor_fidelity.py --reuse_runs                   # evaluate the runs of --output_dir again
    python benchmarks/monitor_fidelity.py --model=MyModel --config_module=my_configs.py --local_dataset=/data/x

Flags the script does not know go to every run as runner flags. ``--nih_sample`` sets NIH_BYOL (unless ``--model``
is given) with the sample's folder as ``--local_dataset``, 64 px, ResNet-18, batches of 16 and 6 epochs (each
overridable by passing the flag). The NIH sample's validation split is ~25 images: read its intervals.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytorch_lightning as pl
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from innerssl.containers.ssl import SSLContainer  # noqa: E402
from innerssl.data.datamodule import SSLDataModule  # noqa: E402
from innerssl.data.datasets.base import LabelInfo  # noqa: E402
from innerssl.eval.embeddings import Embedded, embed_dataset, frozen_encoder_embedding  # noqa: E402
from innerssl.eval.knn import KNNMonitor  # noqa: E402
from innerssl.eval.linear_probe import fit_linear_probe, ranking_auroc  # noqa: E402
from innerssl.eval.online_linear import OnlineLinearHead  # noqa: E402
from innerssl.networks import create_encoder  # noqa: E402
from innerssl.outputs.checkpoints import encoder_spec_of, load_checkpoint, ssl_checkpoint_info  # noqa: E402
from innerssl.outputs.last_checkpoint import LastCheckpoint  # noqa: E402
from innerssl.registry import find_model  # noqa: E402
from innerssl.runner import configure_logging, parse_flags  # noqa: E402
from innerssl.training import train  # noqa: E402

logger = logging.getLogger("monitor_fidelity")

DEFAULT_MODEL = "DemoSimCLR"
NIH_MODEL = "NIH_BYOL"
NIH_SAMPLE = REPO_ROOT.parent / "shared" / "data" / "nih-sample"
NIH_FLAGS = {
    "image_size": "64",
    "ssl_encoder": "resnet18",
    "ssl_training_batch_size": "16",
    "linear_head_batch_size": "16",
    "num_epochs": "6",
}
EPOCH_CHECKPOINT = "epoch{epoch}.ckpt"
"""Copies of each epoch's last.ckpt in the run's checkpoints folder; epoch counted from 1."""
TIMING_FILE = "monitor_fidelity_timing.json"
ONLINE_COLUMN = "linear_head/val_auroc"
KNN_COLUMN = "knn/val_auroc"
BOOTSTRAP_RESAMPLES = 2000
EMBEDDING_BATCH_SIZE = 128


# --- the run ---------------------------------------------------------------------------------------------
class EpochCheckpointCopies(pl.Callback):
    """Keeps a copy of each epoch's ``last.ckpt``: taken when the next epoch starts and when fitting ends, i.e.
    after the run's own end-of-epoch save (which Lightning orders after every non-checkpoint callback)."""

    def _copy(self, trainer: pl.Trainer, epochs_done: int) -> None:
        last = next(callback.path for callback in trainer.callbacks if isinstance(callback, LastCheckpoint))
        if epochs_done > 0 and last.is_file():
            shutil.copyfile(last, last.with_name(EPOCH_CHECKPOINT.format(epoch=epochs_done)))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy(trainer, trainer.current_epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._copy(trainer, trainer.current_epoch)


class HookTimer(pl.Callback):
    """Wall time of the monitors' hooks (wrapped in place) and of whole training steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self._step_start = 0.0

    def wrap(self, callback: pl.Callback, hook: str, name: str) -> None:
        original: Callable[..., Any] = getattr(callback, hook)
        sink = self.seconds.setdefault(name, [])

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            result = original(*args, **kwargs)
            sink.append(time.perf_counter() - start)
            return result

        setattr(callback, hook, timed)  # Lightning looks hooks up on the instance

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # Runs after the monitors' on_train_batch_end (callbacks run in list order): the whole step.
        self.seconds.setdefault("train step incl. head", []).append(time.perf_counter() - self._step_start)


def instrumented(base: type[SSLContainer], timer: HookTimer) -> type[SSLContainer]:
    """``base`` with the epoch-checkpoint copies and the timers added to its callbacks (nothing else changes)."""

    class Instrumented(base):  # type: ignore[valid-type, misc]
        def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
            callbacks = super().create_callbacks(datamodule)
            for callback in callbacks:
                if isinstance(callback, OnlineLinearHead):
                    timer.wrap(callback, "on_train_batch_end", "online head per step")
                    timer.wrap(callback, "on_validation_epoch_end", "online head per validation (end)")
                    timer.wrap(callback, "on_validation_batch_end", "online head per validation batch")
                if isinstance(callback, KNNMonitor):
                    timer.wrap(callback, "on_validation_epoch_end", "kNN per validation")
            return [*callbacks, EpochCheckpointCopies(), timer]

    return Instrumented


def make_container(
    model: str,
    config_module: str | None,
    flags: dict[str, str | None],
    seed: int | None,
    timer: HookTimer | None = None,
) -> SSLContainer:
    base = find_model(model, [config_module] if config_module else [])
    if not issubclass(base, SSLContainer):
        raise SystemExit(f"{model} is not an SSL container")
    container = (instrumented(base, timer) if timer is not None else base)()
    container.apply_flags({**flags, **({"random_seed": str(seed)} if seed is not None else {})})
    if container.linear_head_dataset_name is None:
        raise SystemExit(f"{model} has no linear-head dataset: nothing to monitor")
    return container


def run_folder(output_dir: Path, model: str, seed: int | None) -> Path:
    return output_dir / model / f"seed{seed if seed is not None else 'default'}"


def train_run(
    model: str, config_module: str | None, flags: dict[str, str | None], seed: int | None, output_dir: Path, reuse: bool
) -> Path:
    folder = run_folder(output_dir, model, seed)
    if reuse and (folder / TIMING_FILE).is_file():
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # a fresh run: old epoch copies must not mix with new ones
    timer = HookTimer()
    run_flags = {**flags, "output_dir": str(output_dir), "run_name": folder.name}
    container = make_container(model, config_module, run_flags, seed, timer)
    print(f"Training {model} seed {container.random_seed} into {folder}", flush=True)
    start = time.perf_counter()
    train(container, model)
    timing = {
        "run_seconds": time.perf_counter() - start,
        "load_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "hooks": timer.seconds,
    }
    (folder / TIMING_FILE).write_text(json.dumps(timing))
    return folder


# --- the offline probe -----------------------------------------------------------------------------------
def embed_labeled_splits(
    datamodule: SSLDataModule, precision: str, checkpoint: dict[str, Any], device: torch.device
) -> dict[str, Embedded]:
    """Labeled train and val images through the run's eval stream and the checkpoint's downstream encoder."""
    info = ssl_checkpoint_info(checkpoint, "checkpoint", "--local_weights_path")
    encoder = create_encoder(encoder_spec_of(info))
    prefix = info["encoder_prefix"]
    encoder.load_state_dict({k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)})
    encoder.to(device)
    splits, stream = datamodule.linear_head_splits, datamodule.linear_head_eval_stream
    assert splits is not None and stream is not None
    embed_images = frozen_encoder_embedding(encoder, precision if device.type == "cuda" else "32")
    return {
        name: embed_dataset(
            stream.loader_dataset(getattr(splits, name)),
            embed_images,
            device,
            int(encoder.feature_dim),
            splits.label_info,
            batch_size=EMBEDDING_BATCH_SIZE,
            device_transform=stream.to_encoder if stream.on_device else None,
        )
        for name in ("train", "val")
    }


def online_head_logits(checkpoint: dict[str, Any], features: torch.Tensor) -> torch.Tensor | None:
    """The checkpointed online head's logits of ``features``; None where the callback state is missing."""
    state = checkpoint.get("callbacks", {}).get(OnlineLinearHead.__qualname__, {})
    head = state.get("head")
    if not head:
        return None
    features = features.float()
    if "linear.weight" in head:  # standardised features, then the linear layer
        from innerssl.eval.online_linear import StandardisedLinear

        module = StandardisedLinear.from_state_dict(head)
        with torch.no_grad():
            return module(features.to(module.linear.weight.device))
    return features @ head["weight"].float().T + head["bias"].float()  # a linear layer on raw embeddings


def bootstrap_interval(statistic: Callable[[torch.Tensor], float], size: int, seed: int = 0) -> tuple[float, float]:
    """2.5% and 97.5% quantiles of ``statistic(indices)`` over resamples with replacement (undefined ones skipped)."""
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        value = statistic(torch.randint(size, (size,), generator=generator))
        if math.isfinite(value):
            values.append(value)
    if not values:
        return math.nan, math.nan
    ordered = torch.tensor(values).sort().values
    return ordered[int(0.025 * (len(ordered) - 1))].item(), ordered[int(0.975 * (len(ordered) - 1))].item()


@dataclass(frozen=True)
class EpochRow:
    epoch: int
    online: float
    knn: float
    offline: float
    offline_interval: tuple[float, float]
    online_recomputed: float
    gap_interval: tuple[float, float]
    l2: float
    converged: bool

    @property
    def gap(self) -> float:
        return self.online - self.offline


def logged_value(metrics: pd.DataFrame, epoch: int, column: str) -> float:
    """``column`` of metrics.csv for ``epoch`` (from 1); NaN where it was not logged."""
    if column not in metrics:
        return math.nan
    values = metrics.loc[metrics["epoch"] == epoch - 1, column].dropna()
    return float(values.iloc[-1]) if len(values) else math.nan


def validation_statistics(
    offline_logits: torch.Tensor,
    online_logits: torch.Tensor | None,
    labels: torch.Tensor,
    label_info: LabelInfo,
) -> tuple[float, tuple[float, float], float, tuple[float, float]]:
    """Offline AUROC and its bootstrap interval; the online head's AUROC recomputed and the paired gap's interval."""

    def offline_auroc(indices: torch.Tensor) -> float:
        return ranking_auroc(offline_logits[indices], labels[indices], label_info)

    size = len(labels)
    offline_interval = bootstrap_interval(offline_auroc, size)
    if online_logits is None:
        return offline_auroc(torch.arange(size)), offline_interval, math.nan, (math.nan, math.nan)
    online = online_logits

    def paired_gap(indices: torch.Tensor) -> float:
        return ranking_auroc(online[indices], labels[indices], label_info) - offline_auroc(indices)

    recomputed = ranking_auroc(online, labels, label_info)
    return offline_auroc(torch.arange(size)), offline_interval, recomputed, bootstrap_interval(paired_gap, size)


def evaluate_run(folder: Path, container: SSLContainer, device: torch.device) -> list[EpochRow]:
    """One row per epoch checkpoint of the run in ``folder`` (its container: same flags and seed)."""
    metrics = pd.read_csv(folder / "metrics.csv")
    datamodule = container.create_datamodule()
    splits = datamodule.linear_head_splits
    assert splits is not None
    label_info: LabelInfo = splits.label_info
    positive_weight = container.positive_weight(splits, container.use_balanced_binary_loss_for_linear_head)
    rows = []
    for path in sorted(folder.glob("checkpoints/epoch*.ckpt"), key=lambda p: int(p.stem[len("epoch") :])):
        epoch = int(path.stem[len("epoch") :])
        checkpoint = load_checkpoint(path)
        embedded = embed_labeled_splits(datamodule, container.precision, checkpoint, device)
        val = embedded["val"]
        fit = fit_linear_probe(embedded["train"], val, label_info, positive_weight=positive_weight)
        online_logits = online_head_logits(checkpoint, val.features)
        offline, offline_interval, recomputed, gap_interval = validation_statistics(
            fit.logits(val.features).cpu(),
            online_logits.double().cpu() if online_logits is not None else None,
            val.labels.cpu(),
            label_info,
        )
        rows.append(
            EpochRow(
                epoch=epoch,
                online=logged_value(metrics, epoch, ONLINE_COLUMN),
                knn=logged_value(metrics, epoch, KNN_COLUMN),
                offline=offline,
                offline_interval=offline_interval,
                online_recomputed=recomputed,
                gap_interval=gap_interval,
                l2=fit.l2,
                converged=fit.chosen.fit.converged,
            )
        )
    return rows


# --- the report --------------------------------------------------------------------------------------------
def interval(values: tuple[float, float]) -> str:
    return f"[{values[0]:+.3f}, {values[1]:+.3f}]" if all(math.isfinite(v) for v in values) else "-"


def format_run(seed_label: str, rows: list[EpochRow], num_train: int, num_val: int, timing: dict[str, Any]) -> str:
    lines = [
        f"\n{seed_label}: {num_train} labeled training / {num_val} validation images; run "
        f"{timing['run_seconds'] / 60:.1f} min, load {timing['load_1min']:.1f} on {timing['cpus']} CPUs",
        f"{'epoch':>5}  {'online':>6}  {'kNN':>6}  {'offline':>7}  {'offline 95% CI':>16}  {'online-offline':>14}  "
        f"{'paired 95% CI':>16}  {'online (ckpt)':>13}  {'probe L2':>8}",
    ]
    for r in rows:
        ci = (
            f"[{r.offline_interval[0]:.3f}, {r.offline_interval[1]:.3f}]"
            if math.isfinite(r.offline_interval[0])
            else "-"
        )
        lines.append(
            f"{r.epoch:>5}  {r.online:6.3f}  {r.knn:6.3f}  {r.offline:7.3f}  {ci:>16}  {r.gap:+14.3f}  "
            f"{interval(r.gap_interval):>16}  {r.online_recomputed:13.3f}  {r.l2:8g}"
            + ("" if r.converged else " (not converged)")
        )
    hooks = timing.get("hooks", {})
    if hooks:
        lines.append(
            "cost (median seconds): "
            + ", ".join(
                f"{name} {statistics.median(values):.4f} (x{len(values)})" for name, values in hooks.items() if values
            )
        )
        step, head = hooks.get("train step incl. head"), hooks.get("online head per step")
        if step and head:
            share = torch.tensor(head).sum().item() / torch.tensor(step).sum().item()
            lines.append(f"online head share of the training steps' time: {100 * share:.1f}%")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=f"SSL model (default {DEFAULT_MODEL}; {NIH_MODEL} with --nih_sample)")
    parser.add_argument("--config_module", help="module or .py file with the model, as for runner.py")
    parser.add_argument(
        "--nih_sample", nargs="?", const=str(NIH_SAMPLE), help=f"run on the NIH sample (default {NIH_SAMPLE})"
    )
    parser.add_argument("--seeds", default="", help="comma-separated --random_seed values (default: the model's)")
    parser.add_argument("--output_dir", type=Path, default=REPO_ROOT / "outputs" / "monitor_fidelity")
    parser.add_argument("--tolerance", type=float, default=0.03, help="allowed |online - offline| validation AUROC")
    parser.add_argument("--from_epoch", type=int, default=2, help="first epoch (from 1) the tolerance applies to")
    parser.add_argument("--reuse_runs", action="store_true", help="evaluate the existing runs of --output_dir again")
    arguments, rest = parser.parse_known_args()
    flags = parse_flags(rest)
    model = arguments.model or (NIH_MODEL if arguments.nih_sample else DEFAULT_MODEL)
    if arguments.nih_sample:
        flags = {"local_dataset": arguments.nih_sample, **NIH_FLAGS, **flags}
    seeds: list[int | None] = [int(s) for s in arguments.seeds.split(",") if s.strip()] or [None]
    configure_logging()
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    reports, passed = [], True
    for seed in seeds:
        folder = train_run(model, arguments.config_module, flags, seed, arguments.output_dir, arguments.reuse_runs)
        container = make_container(model, arguments.config_module, flags, seed)
        rows = evaluate_run(folder, container, device)
        splits = container.linear_head_splits()
        assert splits is not None
        timing = json.loads((folder / TIMING_FILE).read_text())
        label = f"{model} seed {container.random_seed}"
        reports.append(format_run(label, rows, len(splits.train), len(splits.get("val")), timing))
        judged = [r for r in rows if r.epoch >= arguments.from_epoch]
        if not judged or any(not abs(r.gap) <= arguments.tolerance for r in judged):
            passed = False
    text = "\n".join(reports)
    verdict = (
        f"{'PASS' if passed else 'FAIL'}: |online - offline| <= {arguments.tolerance} validation AUROC from epoch "
        f"{arguments.from_epoch} on, for every seed"
    )
    print(text + "\n\n" + verdict)
    arguments.output_dir.mkdir(parents=True, exist_ok=True)
    (arguments.output_dir / f"{model}_report.txt").write_text(text + "\n\n" + verdict + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
