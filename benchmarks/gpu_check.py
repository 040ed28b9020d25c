"""Check every GPU path of innerssl and measure its GPU throughput, in one command, in under 8 minutes.

    python benchmarks/gpu_check.py [--output_folder=DIR] [--images=FOLDER] [--sections=throughput.BYOL,ddp]

A GPU is lent rarely and briefly, so one command does everything, each section in its own process with a time
budget, under a global deadline (``--deadline_s``). A section that fails, hangs past its budget or crashes is
reported with its error and the script goes on; the exit code is 1 when any check failed, 0 otherwise (a
skipped check, with its printed reason, is not a failure; a measured ratio below the goal is reported, not
failed). It prints one table at the end (and each row as it comes) and writes it as JSON to
``<output_folder>/gpu_check.json`` (default ``outputs/gpu_check/<time>/``), with each section's log in
``<output_folder>/logs/``.

Sections, in the order they run (the most important first, so a deadline cuts the least important):

- ``data.decode_cache``: builds innerssl's decode cache of the images (default: the 216 real 1024 px PNGs of the
  NIH sample beside the repository, ``../shared/data/nih-sample/images``; generated 1024 px PNGs if it is absent).
- ``augmentation.no_sync``: the batched on-device augmentation (every shipped YAML config, the all-switches-on
  test config and the benchmark's views, 1 and 3 channels, each also as multi-crop views of two sizes, and the
  pinned-copy + augment path of a training batch, two views and DINO's 2 global + 6 local crops) under
  ``torch.cuda.set_sync_debug_mode("error")``: any host-device synchronisation fails it.
- ``throughput.BYOL`` and ``throughput.SimCLR``: ResNet-50 training steps on 224 px views of those images in
  batches of 256 pairs, in fp32, bf16 + channels_last, and bf16 + channels_last + torch.compile: compute-only
  (fixed random views already on the GPU), end-to-end with innerssl's pipeline (decode cache read by loader
  workers + batched augmentation on the GPU) and end-to-end with the usual per-sample pipeline (PIL decode +
  torchvision transforms in loader workers), in pairs/s, with the ratio to compute-only and the peak GPU memory.
  The images are repeated to thousands of items, so an epoch holds every timed batch. The steps and loaders are
  those of ``benchmarks/data_throughput.py``.
- ``goal.byol_end_to_end``: innerssl's end-to-end BYOL rate / compute-only rate (best setting measured) against
  the goal of >= 0.90.
- ``training.ssl_run``: DemoBYOL through innerssl's runner (``innerssl.runner.main``), compiled, bf16-mixed,
  channels_last, 240 steps; ``training.classifier_run``: DemoClassifier from its checkpoint
  (``--local_weights_path``), whose (frozen) encoder must equal the SSL run's target encoder.
- ``ddp.one_gpu``: the multi-GPU code path on one GPU (Lightning DDP, NCCL, SyncBatchNorm), through innerssl's
  training, when innerssl has a way to ask for DDP with one process (``--force_ddp``); ``ddp.two_gpus``: a real
  2-process run when the machine has 2 GPUs.
- ``training.fp16_run``: DemoSimCLR with ``--precision=16-mixed`` (gradient scaler, fp16 logits).
- ``throughput.DINO_multi_crop``: DINO training steps on its multi-crop views (2 global views of 224 px + 6 local
  crops of DINO's default relative size, 96 px), bf16 + channels_last (fp32 in CPU mode): compute-only and both
  end-to-end pipelines as above, in images/s (all 8 views of an image each; the ``pairs_per_s`` column) and steps/s.
- ``throughput.ViT``: BYOL with a ViT encoder; skipped with the reason the code gives while the encoder registry
  has no ViT (as ``throughput.DINO_multi_crop`` is when DINO has no multi-crop parameter).

The runs' facts (strategy, backend, SyncBatchNorm layers, compiled networks, precision, steps, losses, peak
memory) come from a callback of ``benchmarks/gpu_check_configs.py`` (the demo configs plus that callback).

Without CUDA (or with ``--mode=cpu``) the same script runs a tiny CPU version (ResNet-18, 32 px views, batch 4,
a step or two per figure, no compile, no fp16/NCCL), says so at the top, and finishes within a minute: it tests
this script, its figures are not GPU measurements.

Test hooks: ``--inject_failure=CHECK_ID[:hang]`` (comma-separated; an id prefix selects several) makes those
checks raise (or hang until their section's budget kills them), to see that they are reported and make the exit
code 1; ``--budget_scale`` scales every section budget.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import gc
import importlib
import inspect
import json
import math
import multiprocessing
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS.parent
for _path in (str(REPO_ROOT), str(BENCHMARKS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import data_throughput  # noqa: E402

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "nih-sample" / "images"
CONFIG_MODULE = BENCHMARKS / "gpu_check_configs.py"
JSON_NAME = "gpu_check.json"
MIB = 1024 * 1024

OK, FAILED, SKIPPED, MISSED = "ok", "failed", "skipped", "missed"
"""Check statuses. Only FAILED makes the exit code non-zero; MISSED: a measured figure below its goal."""

GOAL_END_TO_END_RATIO = 0.90
"""The performance goal: innerssl's end-to-end BYOL step rate >= 90% of the compute-only rate."""
FORCE_DDP_PARAMETER = "force_ddp"
"""The container parameter (proposed in the issue 15 report) that makes innerssl's training use Lightning's DDP
with one process. ``ddp.one_gpu`` runs when innerssl has it and ``innerssl.training.hardware`` then picks DDP."""
REPORT_RESERVE_S = 5.0
"""Seconds kept before the deadline for the table and the JSON."""
MIN_SECTION_S = 8.0
"""A section is not started with less time than this before the deadline (it could not finish)."""
EXIT_GRACE_S = 10.0
"""How long a section's process may take to exit after its last check, before it is killed."""
PIPELINES = ("compute_only", "innerssl_end_to_end", "baseline_end_to_end")
PIPELINE_TITLES = {
    "compute_only": "compute-only (fixed views on the device)",
    "innerssl_end_to_end": "end-to-end, innerssl (decode cache + batched augmentation on the device)",
    "baseline_end_to_end": "end-to-end, baseline (PIL decode + per-sample torchvision in workers)",
}
LOADER_KIND = {"innerssl_end_to_end": "innerssl", "baseline_end_to_end": "baseline"}


# --- what to run -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One numeric setting of the training step."""

    name: str
    precision: str  # data_throughput's --precision: "32" or "bf16"
    channels_last: bool
    compile: bool
    skip_reason: str = ""


@dataclass(frozen=True)
class Plan:
    """Everything that differs between a GPU run and the tiny CPU run that tests this script."""

    mode: str  # "gpu" or "cpu"
    device: str
    encoder: str
    batch_size: int
    view_size: int
    cache_size: int
    max_images: int
    generated_images: int
    loader_workers: int
    warmup_steps: int
    timed_steps: int
    measurement_cap_s: float
    settings: tuple[Setting, ...]
    compile_backend: str | None
    start_method: str
    torch_threads: int | None
    """torch's CPU threads in each section's process; None: torch's default."""
    deadline_s: float
    budgets_s: dict[str, float]
    run_flags: dict[str, str]
    ssl_run_flags: dict[str, str]
    classifier_run_flags: dict[str, str]
    short_run_flags: dict[str, str]
    dino_setting: str = "bf16_channels_last"
    """The setting (of ``settings``) of the DINO multi-crop steps: one only, as a step with 8 views costs several."""
    dino_local_crops: int = 6
    dino_options: dict[str, Any] = field(default_factory=dict)
    """DINO constructor arguments beyond its multi-crop ones (the CPU mode's tiny head); {}: DINO's defaults."""

    @property
    def cpu(self) -> bool:
        return self.mode == "cpu"


def cpu_supports_bf16() -> bool:
    """bf16 autocast on this CPU: oneDNN's bf16 kernels, where torch can tell."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else True


def gpu_plan(deadline_s: float | None) -> Plan:
    workers = max(1, (os.cpu_count() or 2) - 1)  # one core for the training process itself
    return Plan(
        mode="gpu",
        device="cuda",
        encoder="resnet50",
        batch_size=256,
        view_size=data_throughput.VIEW_SIZE,
        cache_size=data_throughput.CACHE_SIZE,
        max_images=0,
        generated_images=64,
        loader_workers=workers,
        warmup_steps=3,
        timed_steps=12,
        measurement_cap_s=20.0,
        settings=(
            Setting("fp32", "32", channels_last=False, compile=False),
            Setting("bf16_channels_last", "bf16", channels_last=True, compile=False),
            Setting("bf16_channels_last_compile", "bf16", channels_last=True, compile=True),
        ),
        compile_backend=None,
        # Spawned sections: a fresh CUDA context each, which a forked one could not have.
        start_method="spawn",
        torch_threads=None,
        deadline_s=deadline_s or 450.0,
        budgets_s={
            "data": 60,
            "augmentation": 60,
            "throughput.BYOL": 180,
            "training.ssl_run": 150,
            "training.classifier_run": 60,
            "ddp.one_gpu": 75,
            "ddp.two_gpus": 120,
            "training.fp16_run": 60,
            "throughput.SimCLR": 160,
            "throughput.ViT": 150,
            "throughput.DINO_multi_crop": 150,
        },
        run_flags={"max_num_gpus": "1", "num_workers": str(min(8, workers))},
        # 1,280 training images of the demo in batches of 16: 80 steps per epoch, 240 in all.
        ssl_run_flags={
            "precision": "bf16-mixed",
            "channels_last": "true",
            "compile": "true",
            "num_epochs": "3",
            "ssl_training_batch_size": "16",
            "linear_head_batch_size": "16",
        },
        classifier_run_flags={"precision": "bf16-mixed", "channels_last": "true", "num_epochs": "1"},
        short_run_flags={"num_epochs": "1"},
    )


def cpu_plan(deadline_s: float | None, compile_backend: str | None) -> Plan:
    bf16 = cpu_supports_bf16()
    no_bf16 = "" if bf16 else "this CPU has no bf16 kernels"
    no_compile = (
        ""
        if compile_backend
        else "CPU mode: inductor would compile C++ for minutes (--cpu_compile_backend=eager traces it instead)"
    )
    tiny_demo = {
        "demo_num_images": "40",
        "demo_image_size": "32",
        "ssl_training_batch_size": "8",
        "linear_head_batch_size": "8",
        "projection_hidden_dim": "32",
        "projection_dim": "16",
        "knn_every_n_epochs": "0",
        "num_epochs": "1",
        "warmup_epochs": "0",
    }
    return Plan(
        mode="cpu",
        device="cpu",
        encoder="resnet18",
        batch_size=4,
        view_size=32,
        cache_size=40,
        max_images=8,
        generated_images=8,
        loader_workers=1,
        warmup_steps=1,
        timed_steps=1,
        measurement_cap_s=10.0,
        settings=(
            Setting("fp32", "32", channels_last=False, compile=False),
            Setting("bf16_channels_last", "bf16", channels_last=True, compile=False, skip_reason=no_bf16),
            Setting(
                "bf16_channels_last_compile",
                "bf16",
                channels_last=True,
                compile=True,
                skip_reason=no_bf16 or no_compile,
            ),
        ),
        compile_backend=compile_backend,
        # Forked sections inherit the imports: the CPU mode has no time to import torch again for each.
        start_method="fork",
        # One thread: on a small shared CPU, OpenMP threads waiting for each other cost more than they bring (a tiny
        # BYOL step took 0.3 s with one thread and 1-7 s with two on this repository's loaded 2-core machine).
        torch_threads=1,
        deadline_s=deadline_s or 100.0,
        budgets_s={
            "data": 30,
            "augmentation": 30,
            "throughput.BYOL": 40,
            "training.ssl_run": 45,
            "training.classifier_run": 30,
            "ddp.one_gpu": 45,
            # Skipped on a CPU (no GPUs, no fp16): short budgets, so that a hang injected there costs the test little.
            "ddp.two_gpus": 10,
            "training.fp16_run": 10,
            "throughput.SimCLR": 40,
            "throughput.ViT": 40,
            "throughput.DINO_multi_crop": 40,
        },
        run_flags={"max_num_gpus": "0", "num_workers": "0", **tiny_demo},
        ssl_run_flags={"precision": "bf16-mixed" if bf16 else "32", "channels_last": "true", "compile": "false"},
        classifier_run_flags={"precision": "bf16-mixed" if bf16 else "32", "channels_last": "true"},
        short_run_flags={},
        # fp32: always available, and bf16 on a CPU is no faster; a tiny head (DINO's is 2048 -> 256 -> 65536 wide).
        dino_setting="fp32",
        dino_options={"projection_hidden_dim": 64, "projection_dim": 32, "output_dim": 256},
    )


# --- results ---------------------------------------------------------------------------------------------


@dataclass
class CheckResult:
    id: str
    title: str
    status: str
    figures: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    """Why a check was skipped, or what failed (one line; the section's log has the rest)."""
    seconds: float = 0.0


class InjectedFailure(RuntimeError):
    """Raised by a check named in --inject_failure (a test hook)."""


@dataclass
class Context:
    """What a section's process needs: the plan, the folders, the deadline and the test hooks."""

    plan: Plan
    work: Path
    output: Path
    images: Path
    deadline: float
    """Absolute time.time() after which no measurement starts."""
    injected: dict[str, str]
    run_ddp_on_cpu: bool = False
    ssl_checkpoint: str | None = None

    def inject(self, check_id: str) -> None:
        """The test hook: raise (or hang) in the checks that --inject_failure names."""
        for prefix, action in self.injected.items():
            if check_id == prefix or check_id.startswith(prefix + "."):
                if action == "hang":
                    time.sleep(24 * 3600)
                raise InjectedFailure(f"injected failure (--inject_failure={prefix})")

    def time_left(self) -> float:
        return self.deadline - time.time()

    def cache_root(self) -> Path:
        return self.work / "decode_cache"


Emit = Callable[[CheckResult], None]


def one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0][:300] if text else type(error).__name__


def run_check(
    context: Context, emit: Emit, check_id: str, title: str, work: Callable[[dict[str, Any]], None]
) -> CheckResult:
    """Runs one check: ``work`` fills its figures; it is reported ok, skipped (``work`` raised ``Skip``) or failed
    with the error, which is not raised further, so that the section goes on with its next check. ``work`` may
    set ``figures["_status"]`` / ``figures["_reason"]`` to report another status."""
    figures: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        context.inject(check_id)
        work(figures)
    except Skip as skip:
        result = CheckResult(check_id, title, SKIPPED, figures, str(skip))
    except Exception as error:
        traceback.print_exc()  # into the section's log
        result = CheckResult(check_id, title, FAILED, figures, one_line(error))
    else:
        status, reason = figures.pop("_status", OK), figures.pop("_reason", "")
        result = CheckResult(check_id, title, status, figures, reason)
    result.seconds = round(time.perf_counter() - start, 2)
    emit(result)
    return result


class Skip(Exception):
    """A check that cannot run here, with the reason."""


def require(condition: bool, message: str) -> None:
    """A correctness condition of a check (an AssertionError names what did not hold)."""
    if not condition:
        raise AssertionError(message)


# --- sections: data and augmentation ---------------------------------------------------------------------


def throughput_args(
    context: Context, setting: Setting | None = None, method: str = "BYOL", encoder: str = "", encoder_options: str = ""
) -> Any:
    """data_throughput's settings (its own flags, so its defaults and meaning apply) for this plan."""
    plan = context.plan
    warmup = max(plan.warmup_steps, plan.loader_workers)
    flags = [
        f"--images={context.images}",
        f"--max_images={plan.max_images}",
        f"--device={plan.device}",
        f"--workers={plan.loader_workers}",
        f"--batch_size={plan.batch_size}",
        f"--train_batch_size={plan.batch_size}",
        f"--encoder={encoder or plan.encoder}",
        f"--method={method}",
        f"--encoder_options={encoder_options}",
        f"--view_size={plan.view_size}",
        f"--cache_size={plan.cache_size}",
        # An epoch longer than any measurement: no epoch boundary (loader restart) inside a timed window.
        f"--repeat_items={plan.batch_size * 2 * (warmup + max(plan.timed_steps, plan.loader_workers) + 2)}",
    ]
    if setting is not None:
        flags += [
            f"--precision={setting.precision}",
            "--channels_last" if setting.channels_last else "--no-channels_last",
        ]
        flags += ["--compile" if setting.compile else "--no-compile"]
        if plan.compile_backend:
            flags.append(f"--compile_backend={plan.compile_backend}")
    args = data_throughput.parse_args(flags)
    args.cache_root = str(context.cache_root())
    return args


def section_data(context: Context, emit: Emit) -> None:
    def build(figures: dict[str, Any]) -> None:
        args = throughput_args(context)
        paths = data_throughput.image_paths(args)
        require(len(paths) > 0, f"no PNG/JPEG images in {context.images}")
        start = time.perf_counter()
        cache = data_throughput.build_cache(paths, context.cache_root(), args.workers, args.cache_size)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in context.cache_root().rglob("*") if f.is_file())
        figures.update(
            images=len(cache),
            source=str(context.images),
            build_s=round(seconds, 2),
            cache_mb=round(size / 1e6, 1),
            cache_px=args.cache_size,
        )
        with Image.open(paths[0]) as first:
            figures["source_px"] = f"{first.width}x{first.height}"

    run_check(context, emit, "data.decode_cache", "decode cache of the source images", build)


NO_SYNC_MULTI_CROP_LOCAL = (3, 0.5, (0.05, 0.4))
"""count, relative size and crop scale of the local crops that augmentation.no_sync adds to each config's 2 views."""


def no_sync_multi_crop() -> tuple[Any, ...]:
    from innerssl.augment.views import ViewGroup

    count, size, scale = NO_SYNC_MULTI_CROP_LOCAL
    return (ViewGroup(2), ViewGroup(count, size=size, crop_scale=scale, role="local"))


def augmentation_cases(context: Context) -> list[tuple[str, Any]]:
    """(name, AugmentationConfig) of every shipped YAML config, the all-on test config and the benchmark views."""
    from innerssl.augment.config import load_augmentation_config, parse_augmentation_config

    cases = [
        (path.stem, load_augmentation_config(str(path)))
        for path in sorted((REPO_ROOT / "augmentations").glob("*.yaml"))
    ]
    with contextlib.suppress(ImportError):  # the tests folder travels with a checkout; without it, one case less
        from tests.augment.all_on import all_on_config

        cases.append(("all_on (tests/augment/all_on.py)", parse_augmentation_config(all_on_config(36, 32), "all_on")))
    plan = context.plan
    cases.append(("benchmark views", data_throughput.project_config(plan.cache_size, plan.view_size)))
    return cases


def section_augmentation(context: Context, emit: Emit) -> None:
    from innerssl.augment.batched import build_batched_transform
    from innerssl.augment.views import view_shape
    from innerssl.data.pipeline import ImageStream

    def no_sync(figures: dict[str, Any]) -> None:
        device = torch.device(context.plan.device)
        cuda = device.type == "cuda"

        @contextlib.contextmanager
        def no_host_sync() -> Iterator[None]:
            """As tests/augment/test_batched.py's CUDA test: any synchronisation raises inside."""
            if not cuda:
                yield
                return
            torch.cuda.set_sync_debug_mode("error")
            try:
                yield
            finally:
                torch.cuda.set_sync_debug_mode("default")

        checked = []
        multi_crop_groups = no_sync_multi_crop()
        for name, config in augmentation_cases(context):
            for channels in (1, 3):
                transform = build_batched_transform(config, channels)
                images = torch.randint(0, 256, (8, 1, 40, 44), dtype=torch.uint8, device=device)
                transform(images)  # warm-up: lazy initialisation may synchronise
                try:
                    with no_host_sync():
                        out = transform(images)
                except RuntimeError as error:
                    raise AssertionError(f"{name}, {channels} channel(s): {one_line(error)}") from error
                require(out.device == images.device and out.shape[:2] == (8, channels), f"{name}: shape {out.shape}")
                require(bool(out.min() >= 0) and bool(out.max() <= 1), f"{name}: values outside [0, 1]")
                checked.append(f"{name}/{channels}ch")
                # Multi-crop: two views of the config's size and three half-size local crops with their own scale.
                multi_crop = ImageStream(config, channels, True, views=multi_crop_groups)
                multi_crop.to_encoder(images)
                try:
                    with no_host_sync():
                        views = multi_crop.to_encoder(images)
                except RuntimeError as error:
                    raise AssertionError(f"{name}, {channels} channel(s), multi-crop: {one_line(error)}") from error
                sides = sorted({view.shape[-1] for view in views})
                require(len(views) == 5 and len(sides) == 2, f"{name}: multi-crop views of sides {sides}")
                require(all(bool(v.min() >= 0) and bool(v.max() <= 1) for v in views), f"{name}: multi-crop range")
                checked.append(f"{name}/{channels}ch/multi-crop")
        # The path of a training batch: pinned uint8 batch -> non-blocking copy -> two augmented views.
        plan = context.plan
        stream = ImageStream(data_throughput.project_config(plan.cache_size, plan.view_size), 1, True, views=2)
        batch = torch.randint(0, 256, (16, 1, plan.cache_size, plan.cache_size), dtype=torch.uint8)
        batch = batch.pin_memory() if cuda else batch
        stream.to_encoder(batch.to(device, non_blocking=True))
        with no_host_sync():
            view0, view1 = stream.to_encoder(batch.to(device, non_blocking=True))
        require(view0.shape == (16, 1, plan.view_size, plan.view_size), f"views {tuple(view0.shape)}")
        checked.append("pinned copy + two views")
        # The same with DINO's multi-crop views (what a DINO run's training batch becomes).
        groups = data_throughput.multi_crop_groups(dino_args(context))
        dino_stream = ImageStream(data_throughput.project_config(plan.cache_size, plan.view_size), 1, True, groups)
        dino_stream.to_encoder(batch.to(device, non_blocking=True))
        with no_host_sync():
            views = dino_stream.to_encoder(batch.to(device, non_blocking=True))
        expected = [view_shape(g.size, plan.view_size, plan.view_size) for g in groups for _ in range(g.count)]
        require([tuple(v.shape[-2:]) for v in views] == expected, f"DINO views {[tuple(v.shape) for v in views]}")
        checked.append(f"pinned copy + DINO's {data_throughput.multi_crop_label(dino_args(context))}")
        figures.update(cases=len(checked), configs=", ".join(checked))
        if not cuda:
            figures["_status"] = SKIPPED
            figures["_reason"] = (
                f"CPU mode: the {len(checked)} cases ran on the CPU; the no-sync guarantee needs CUDA's sync debug mode"
            )

    title = "batched augmentation and the training batch path without host-device synchronisation"
    run_check(context, emit, "augmentation.no_sync", title, no_sync)


# --- sections: throughput --------------------------------------------------------------------------------


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / MIB) if device.type == "cuda" else None


def measure_compute_only(
    context: Context,
    args: Any,
    step: Callable[..., None],
    figures: dict[str, Any],
    view_sides: list[tuple[int, int]] | None = None,
) -> float:
    """Pairs (images) per second of the step on fixed random views already on the device (the GPU's own ceiling);
    ``view_sides``: (height, width) of each view (default: two of the plan's view size)."""
    plan = context.plan
    device = torch.device(plan.device)
    sides = view_sides or [(plan.view_size, plan.view_size)] * 2
    views = [torch.rand(plan.batch_size, 1, *side, device=device) for side in sides]
    start = time.perf_counter()
    step(*views)  # compiles, when compiling, and picks the convolution kernels
    data_throughput.synchronize(device)
    figures["first_step_s"] = round(time.perf_counter() - start, 2)
    rate = data_throughput.timed_pairs_per_second(
        iter(lambda: views, None),
        lambda pair: step(*pair),
        plan.timed_steps,
        plan.batch_size,
        device,
        warmup_batches=plan.warmup_steps - 1,
    )
    figures.update(timed_steps=plan.timed_steps, warmup_steps=plan.warmup_steps)
    return rate


def measure_end_to_end(
    context: Context,
    args: Any,
    kind: str,
    step: Callable[[torch.Tensor, torch.Tensor], None],
    compute_rate: float,
    figures: dict[str, Any],
) -> float:
    """Pairs/s of loader + transfer + augmentation + step, in the loader's steady state.

    A fresh loader's workers all start at once, so its first batches come in a burst (one per worker) and the
    next ones a whole worker-batch time later. When one worker needs longer for a batch than the step needs for
    all workers' batches (the loader may be the bottleneck), the warm-up takes that first burst and the timing
    covers whole rounds of one batch per worker; otherwise (the loader keeps ahead) a few steps do.
    """
    plan = context.plan
    device = torch.device(plan.device)
    batches, to_views = data_throughput.loader_batches(kind, args, device)
    try:
        start = time.perf_counter()
        first = next(batches)
        first_batch_s = time.perf_counter() - start
        workers = plan.loader_workers
        loader_may_bound = workers > 1 and first_batch_s > workers * plan.batch_size / compute_rate
        warmup = workers if loader_may_bound else plan.warmup_steps
        timed = workers * math.ceil(plan.timed_steps / workers) if loader_may_bound else plan.timed_steps
        step(*to_views(first))
        for _ in range(warmup - 1):
            step(*to_views(next(batches)))
        data_throughput.synchronize(device)
        start = time.perf_counter()
        done = 0
        while done < timed:
            step(*to_views(next(batches)))
            done += 1
            if done >= 2 and time.perf_counter() - start > plan.measurement_cap_s:
                figures["capped_at_s"] = plan.measurement_cap_s  # a slow setting: fewer steps, still whole ones
                break
        data_throughput.synchronize(device)
        rate = done * plan.batch_size / (time.perf_counter() - start)
        figures.update(
            first_batch_s=round(first_batch_s, 2),
            loader_workers=workers,
            warmup_steps=warmup,
            timed_steps=done,
            loader_may_bound=loader_may_bound,
        )
        return rate
    finally:
        batches.close()  # shuts the loader's workers down (the generator holds the only reference)
        del batches
        gc.collect()


def throughput_group(
    context: Context, emit: Emit, method: str, encoder: str, prefix: str, encoder_options: str = ""
) -> None:
    """Every setting x pipeline of one method and encoder."""
    for setting in context.plan.settings:  # settings that cannot run here first: a timeout later leaves them skipped
        if setting.skip_reason:
            throughput_setting(context, emit, setting, method, encoder, prefix, encoder_options)
    for setting in context.plan.settings:
        if setting.skip_reason:
            continue
        throughput_setting(context, emit, setting, method, encoder, prefix, encoder_options)
        gc.collect()  # frees the setting's module before the next one builds its own
        if context.plan.device == "cuda":
            torch.cuda.empty_cache()


def throughput_setting(
    context: Context,
    emit: Emit,
    setting: Setting,
    method: str,
    encoder: str,
    prefix: str,
    encoder_options: str,
    multi_crop: bool = False,
) -> None:
    """Compute-only, then the two end-to-end pipelines with the same step (module, optimizer, compiled code);
    ``multi_crop``: DINO's multi-crop views (data_throughput's ``*_multi_crop`` loaders), rates in images/s."""
    plan = context.plan
    device = torch.device(plan.device)
    ids = [f"{prefix}.{setting.name}.{pipeline}" for pipeline in PIPELINES]
    what = f"{method} {encoder}" + (f" multi-crop ({multi_crop_views(context)})" if multi_crop else "")
    titles = [f"{what}, {setting.name}: {PIPELINE_TITLES[pipeline]}" for pipeline in PIPELINES]
    if setting.skip_reason or context.time_left() < plan.measurement_cap_s:
        reason = setting.skip_reason or "global deadline reached before this setting"
        for check_id, title in zip(ids, titles):
            emit(CheckResult(check_id, title, SKIPPED, reason=reason))
        return
    torch.manual_seed(0)
    args = (dino_args if multi_crop else throughput_args)(context, setting, method, encoder, encoder_options)
    measured: dict[str, Any] = {}  # the step and its compute-only rate, for the end-to-end measurements
    multi_crop_figures: dict[str, Any] = {}
    hyperparameters: dict[str, Any] | None = None
    view_sides: list[tuple[int, int]] | None = None
    if multi_crop:
        from innerssl.augment.views import total_views, view_shape

        hyperparameters = {**data_throughput.multi_crop_hyperparameters(args), **plan.dino_options}
        groups = data_throughput.multi_crop_groups(args)
        view_sides = [view_shape(g.size, plan.view_size, plan.view_size) for g in groups for _ in range(g.count)]
        multi_crop_figures = {"views": f"{total_views(groups)} ({multi_crop_views(context)})", "unit": "images/s"}

    def per_step(rate: float) -> dict[str, Any]:
        return {"steps_per_s": round(rate / plan.batch_size, 3), **multi_crop_figures} if multi_crop else {}

    def compute_only(figures: dict[str, Any]) -> None:
        reset_peak_memory(device)
        step = data_throughput.ssl_step(args, device, method, hyperparameters)
        rate = measure_compute_only(context, args, step, figures, view_sides)
        measured.update(step=step, rate=rate)
        figures.update(pairs_per_s=round(rate, 1), peak_gpu_mib=peak_memory_mib(device), **per_step(rate))

    def end_to_end(figures: dict[str, Any], kind: str) -> None:
        if "step" not in measured:
            raise Skip("the compute-only step of this setting failed (see its row)")
        if context.time_left() < plan.measurement_cap_s:
            raise Skip("global deadline reached before this measurement")
        reset_peak_memory(device)
        rate = measure_end_to_end(context, args, kind, measured["step"], measured["rate"], figures)
        figures.update(
            pairs_per_s=round(rate, 1),
            vs_compute=round(rate / measured["rate"], 3),
            peak_gpu_mib=peak_memory_mib(device),
            **per_step(rate),
        )

    suffix = f"_{data_throughput.MULTI_CROP}" if multi_crop else ""
    run_check(context, emit, ids[0], titles[0], compute_only)
    for check_id, title, pipeline in zip(ids[1:], titles[1:], PIPELINES[1:]):
        kind = LOADER_KIND[pipeline] + suffix
        run_check(context, emit, check_id, title, lambda figures, kind=kind: end_to_end(figures, kind))


def section_throughput_byol(context: Context, emit: Emit) -> None:
    throughput_group(context, emit, "BYOL", context.plan.encoder, "throughput.BYOL")


def section_throughput_simclr(context: Context, emit: Emit) -> None:
    throughput_group(context, emit, "SimCLR", context.plan.encoder, "throughput.SimCLR")


VIT_CANDIDATES = {
    "gpu": {"timm:": ("timm:vit_small_patch16_224", {}), "monai:": ("monai:vit", {"img_size": 224, "patch_size": 16})},
    "cpu": {
        "timm:": ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8}),
        "monai:": (
            "monai:vit",
            {"img_size": 32, "patch_size": 8, "hidden_size": 192, "mlp_dim": 768, "num_layers": 2, "num_heads": 3},
        ),
    },
}
"""The ViT (and its construction options) to try when the encoder registry has a family of models rather than
plain names: ViT-S/16 on a GPU; in CPU mode a tiny one sized for its 32 px views."""
PLAIN_VIT_OPTIONS = {"gpu": {}, "cpu": {"img_size": 32, "patch_size": 8}}


def registered_encoders() -> list[str]:
    """Every encoder name innerssl knows: innerssl.encoders' list and the ENCODERS registries where there are any
    (innerssl.networks, innerssl.registry), families as their prefix (``timm:``)."""
    names: set[str] = set()
    with contextlib.suppress(ImportError):
        from innerssl.encoders import ENCODER_NAMES

        names.update(ENCODER_NAMES)
    for module_name in ("innerssl.networks", "innerssl.registry"):
        try:
            encoder_registry = getattr(importlib.import_module(module_name), "ENCODERS", None)
            if encoder_registry is not None:
                names.update(encoder_registry.names())
        except Exception as error:  # a registry under construction must not stop the check
            print(f"could not read {module_name}.ENCODERS: {one_line(error)}", flush=True)
    return sorted(names)


@functools.cache
def vit_encoder(mode: str) -> tuple[str | None, str, str]:
    """The first registered ViT that innerssl's BYOL can be built with (on the meta device: no weights, a fraction
    of a second), its construction options (``k=v,...``), or None and why there is none."""
    names = registered_encoders()
    candidates = [(name, PLAIN_VIT_OPTIONS[mode]) for name in names if "vit" in name.lower() and not name.endswith(":")]
    candidates += [VIT_CANDIDATES[mode][name] for name in names if name in VIT_CANDIDATES[mode]]
    if not candidates:
        return None, "", f"no ViT in innerssl's encoder registry (encoders: {', '.join(names)})"
    from innerssl.ssl import SSLModule, ssl_method

    takes_options = "encoder_options" in inspect.signature(SSLModule.__init__).parameters
    errors = []
    for name, options in candidates:
        if options and not takes_options:
            errors.append(f"{name}: the SSL methods take no encoder_options to size it")
            continue
        try:
            with torch.device("meta"):
                ssl_method("BYOL")(
                    encoder_name=name, in_channels=1, **({"encoder_options": options} if options else {})
                )
            return name, ",".join(f"{key}={value}" for key, value in options.items()), ""
        except Exception as error:
            errors.append(f"{name}: {one_line(error)}")
    return None, "", f"innerssl lists ViT encoders but its BYOL cannot be built with one ({'; '.join(errors)})"


DINO_MULTI_CROP_PARAMETERS = ("num_local_crops", "local_crop_size", "global_crop_scale", "local_crop_scale")
"""DINO's constructor arguments that the multi-crop steps set (a DINO run's ``--dino_<name>`` flags)."""


def dino_multi_crop_parameters() -> list[str]:
    """DINO's multi-crop (local crops) parameters, from its constructor's signature: where a run's configuration
    keeps them (the SSL container or a method registry) does not matter here; [] without DINO."""
    try:
        from innerssl.ssl.dino import DINO
    except ImportError:
        return []
    names = inspect.signature(DINO.__init__).parameters
    return sorted(name for name in names if "crop" in name.lower() or "local" in name.lower())


def unavailable_reason(section_id: str, mode: str) -> str:
    """Why a throughput section for a feature innerssl lacks cannot run yet ('' when it can)."""
    if section_id == "throughput.ViT":
        return vit_encoder(mode)[2]
    if section_id == "throughput.DINO_multi_crop":
        missing = sorted(set(DINO_MULTI_CROP_PARAMETERS) - set(dino_multi_crop_parameters()))
        if missing:
            return f"innerssl's DINO has no multi-crop parameter {', '.join(missing)} (takes the global views only)"
    return ""


def section_throughput_vit(context: Context, emit: Emit) -> None:
    encoder, options, _ = vit_encoder(context.plan.mode)
    assert encoder is not None  # the parent skips the section otherwise
    throughput_group(context, emit, "BYOL", encoder, "throughput.ViT", options)


def dino_setting(plan: Plan) -> Setting:
    return next(setting for setting in plan.settings if setting.name == plan.dino_setting)


def dino_args(
    context: Context, setting: Setting | None = None, method: str = "DINO", encoder: str = "", encoder_options: str = ""
) -> Any:
    """data_throughput's settings for DINO's multi-crop steps: its local crops beside the plan's views (their size:
    data_throughput's default, DINO's relative default)."""
    args = throughput_args(context, setting, method, encoder, encoder_options)
    args.local_crops = context.plan.dino_local_crops
    return args


def multi_crop_views(context: Context) -> str:
    """E.g. ``2 x 224 + 6 x 96 px views (8 per image)``."""
    return data_throughput.multi_crop_label(dino_args(context))


def section_throughput_dino_multi_crop(context: Context, emit: Emit) -> None:
    setting = dino_setting(context.plan)
    throughput_setting(
        context, emit, setting, "DINO", context.plan.encoder, "throughput.DINO_multi_crop", "", multi_crop=True
    )


# --- sections: training runs through innerssl's runner ---------------------------------------------------


def run_folder(context: Context, model: str, run_name: str) -> Path:
    return context.work / "runs" / model / run_name


def run_runner(context: Context, model: str, run_name: str, flags: dict[str, str]) -> tuple[Path, list[dict]]:
    """innerssl.runner.main with the demo config ``model`` of gpu_check_configs and ``flags``; returns the run folder
    and the probe records of its processes (rank order)."""
    from innerssl.runner import main

    all_flags = {
        "output_dir": str(context.work / "runs"),
        "dataset_cache_dir": str(context.work / "dataset_cache"),
        "run_name": run_name,
        **context.plan.run_flags,
        **flags,
    }
    argv = [f"--model={model}", f"--config_module={CONFIG_MODULE}", *(f"--{k}={v}" for k, v in all_flags.items())]
    print("runner:", " ".join(argv), flush=True)
    code = main(argv)
    require(code == 0, f"innerssl.runner.main exited with {code}")
    return run_folder(context, model, run_name), read_probes(run_folder(context, model, run_name))


def read_probes(folder: Path) -> list[dict]:
    from gpu_check_configs import PROBE_FILE

    probes = sorted(folder.glob(PROBE_FILE.format(rank="*")))
    require(bool(probes), f"the run wrote no {PROBE_FILE.format(rank='<R>')} (did training end?)")
    return [json.loads(path.read_text()) for path in probes]


def same_precision(asked: str, trained: str) -> bool:
    """innerssl's --precision against Lightning's name for what ran ("32" trains as "32-true")."""
    return trained in (asked, f"{asked}-true")


def main_losses(losses: dict[str, float]) -> dict[str, float]:
    """The epoch losses of a run's logged metrics (without the last step's, and without the alias of the epoch's)."""
    return {
        name: round(value, 4)
        for name, value in losses.items()
        if not name.endswith("_step") and f"{name}_epoch" not in losses
    }


def probe_figures(probe: dict) -> dict[str, Any]:
    """The probe facts worth a table column or note."""
    return {
        "steps": probe["global_step"],
        "precision": probe["precision"],
        "strategy": probe["strategy"],
        "world_size": probe["world_size"],
        "backend": probe["process_group_backend"],
        "sync_batchnorm_layers": probe["sync_batchnorm_layers"],
        "compiled": ",".join(probe["compiled_networks"]) or "-",
        "channels_last": probe["channels_last_weights"],
        "losses": main_losses(probe["losses"]),
        "peak_gpu_mib": None if probe["peak_gpu_memory_mib"] is None else round(probe["peak_gpu_memory_mib"]),
    }


def section_ssl_run(context: Context, emit: Emit) -> None:
    plan = context.plan
    flags = plan.ssl_run_flags
    compiled = flags.get("compile") == "true"
    what = f"{'compiled, ' if compiled else ''}{flags['precision']}, channels_last"

    def ssl_run(figures: dict[str, Any]) -> None:
        folder, probes = run_runner(context, "GpuCheckBYOL", "ssl_run", flags)
        probe = probes[0]
        figures.update(probe_figures(probe))
        require(probe["losses_finite"], f"losses not finite: {probe['losses']}")
        require(same_precision(flags["precision"], probe["precision"]), f"precision {probe['precision']}")
        require(probe["channels_last_weights"] is True, "convolution weights are not channels_last")
        require(not compiled or bool(probe["compiled_networks"]), "--compile=true compiled no network")
        checkpoint = folder / "checkpoints" / "last.ckpt"
        require(checkpoint.is_file(), f"no {checkpoint}")
        figures["checkpoint"] = str(checkpoint)
        if not compiled:
            figures["note"] = "compile off in CPU mode"

    run_check(context, emit, "training.ssl_run", f"DemoBYOL through innerssl's runner ({what})", ssl_run)


def section_classifier_run(context: Context, emit: Emit) -> None:
    from innerssl.outputs.checkpoints import CHECKPOINT_KEY, load_checkpoint

    def classifier_run(figures: dict[str, Any]) -> None:
        if context.ssl_checkpoint is None:
            raise Skip("no SSL checkpoint: training.ssl_run did not finish")
        flags = {"local_weights_path": context.ssl_checkpoint, **context.plan.classifier_run_flags}
        folder, probes = run_runner(context, "GpuCheckClassifier", "classifier_run", flags)
        figures.update(probe_figures(probes[0]))
        # The classifier's encoder is frozen (DemoClassifier's linear probe), so after training it must still equal
        # the SSL run's downstream (BYOL: target) encoder: the weights really came from the checkpoint.
        ssl_checkpoint = load_checkpoint(context.ssl_checkpoint)
        prefix = ssl_checkpoint[CHECKPOINT_KEY]["encoder_prefix"]  # the checkpoint names its downstream encoder
        ssl_state = {k[len(prefix) :]: v for k, v in ssl_checkpoint["state_dict"].items() if k.startswith(prefix)}
        classifier_state = load_checkpoint(folder / "checkpoints" / "last.ckpt")["state_dict"]
        missing = [k for k in ssl_state if f"encoder.{k}" not in classifier_state]
        require(bool(ssl_state) and not missing, f"classifier checkpoint lacks encoder.{missing[:1]} ({prefix=})")
        differing = [k for k, v in ssl_state.items() if not torch.equal(classifier_state[f"encoder.{k}"], v)]
        require(not differing, f"{len(differing)} encoder tensors differ from the SSL checkpoint, e.g. {differing[:2]}")
        figures["encoder_tensors_equal"] = len(ssl_state)
        figures["test_predictions"] = (folder / "test_predictions.csv").is_file()

    title = "DemoClassifier from the SSL checkpoint (--local_weights_path)"
    run_check(context, emit, "training.classifier_run", title, classifier_run)


def section_fp16_run(context: Context, emit: Emit) -> None:
    def fp16_run(figures: dict[str, Any]) -> None:
        if context.plan.cpu:
            raise Skip("CPU mode: 16-mixed needs a GPU (innerssl refuses it on the CPU)")
        flags = {"precision": "16-mixed", **context.plan.short_run_flags}
        _, probes = run_runner(context, "GpuCheckSimCLR", "fp16_run", flags)
        probe = probes[0]
        figures.update(probe_figures(probe), gradient_scale=probe["gradient_scale"])
        require(same_precision("16-mixed", probe["precision"]), f"precision {probe['precision']}")
        require(probe["gradient_scale"] is not None, "no gradient scaler in a 16-mixed run")
        require(probe["losses_finite"], f"losses not finite: {probe['losses']}")

    run_check(context, emit, "training.fp16_run", "DemoSimCLR with --precision=16-mixed (gradient scaler)", fp16_run)


def force_ddp_available(context: Context) -> str:
    """'' when innerssl can train one process with DDP (--force_ddp), else why not (from the code, not a list)."""
    from innerssl.containers.ssl import SSLContainer
    from innerssl.training import hardware

    if FORCE_DDP_PARAMETER not in SSLContainer.parameters():
        return (
            "innerssl's training uses DDP only with more than one process, and has no --force_ddp parameter yet to "
            "ask for it with one (the issue 15 report proposes it)"
        )
    container = SSLContainer()
    container.apply_flags({FORCE_DDP_PARAMETER: "true", "max_num_gpus": context.plan.run_flags["max_num_gpus"]})
    strategy = hardware(container)["strategy"]
    return "" if strategy == "ddp" else f"--{FORCE_DDP_PARAMETER}=true still gives strategy={strategy}"


def check_ddp_probes(probes: list[dict], world_size: int, backend: str, sync_batchnorm: bool) -> None:
    require(len(probes) == world_size, f"{len(probes)} processes wrote a probe, expected {world_size}")
    for probe in probes:
        rank = probe["global_rank"]
        require(probe["strategy"] == "DDPStrategy", f"rank {rank}: strategy {probe['strategy']}")
        require(probe["world_size"] == world_size, f"rank {rank}: world size {probe['world_size']}")
        require(probe["process_group_backend"] == backend, f"rank {rank}: backend {probe['process_group_backend']}")
        if sync_batchnorm:
            require(probe["sync_batchnorm_layers"] > 0, f"rank {rank}: no SyncBatchNorm layer")
            require(probe["plain_batchnorm_layers"] == 0, f"rank {rank}: {probe['plain_batchnorm_layers']} BatchNorm")
        require(probe["losses_finite"], f"rank {rank}: losses not finite: {probe['losses']}")


def section_ddp_one_gpu(context: Context, emit: Emit) -> None:
    cpu = context.plan.cpu

    def one_process(figures: dict[str, Any]) -> None:
        unavailable = force_ddp_available(context)
        if unavailable:
            raise Skip(unavailable)
        if cpu and not context.run_ddp_on_cpu:
            raise Skip(
                f"CPU mode: --{FORCE_DDP_PARAMETER} gives strategy=ddp; NCCL and SyncBatchNorm need a GPU "
                "(--run_ddp_on_cpu runs it with gloo)"
            )
        flags = {
            FORCE_DDP_PARAMETER: "true",
            "precision": "32" if cpu else "bf16-mixed",
            **context.plan.short_run_flags,
        }
        _, probes = run_runner(context, "GpuCheckBYOL", "ddp_one_process", flags)
        figures.update(probe_figures(probes[0]))
        check_ddp_probes(probes, 1, "gloo" if cpu else "nccl", sync_batchnorm=not cpu)
        if not cpu:
            figures["note"] = "one process: SyncBatchNorm is in place but computes locally (world size 1)"

    title = "DDP with one process: gloo on the CPU" if cpu else "DDP with one GPU: NCCL, SyncBatchNorm"
    run_check(context, emit, "ddp.one_gpu", title, one_process)


def section_ddp_two_gpus(context: Context, emit: Emit) -> None:
    def two_processes(figures: dict[str, Any]) -> None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus < 2:
            raise Skip(f"needs 2 GPUs, this machine has {gpus}")
        # Lightning starts rank 1 by running the command line again: that must be runner.py, not this script.
        flags = {
            "output_dir": str(context.work / "runs"),
            "dataset_cache_dir": str(context.work / "dataset_cache"),
            "run_name": "ddp_two_gpus",
            **context.plan.run_flags,
            "max_num_gpus": "2",
            "precision": "bf16-mixed",
            **context.plan.short_run_flags,
        }
        command = [sys.executable, "runner.py", "--model=GpuCheckBYOL", f"--config_module={CONFIG_MODULE}"]
        command += [f"--{k}={v}" for k, v in flags.items()]
        print("subprocess:", " ".join(command), flush=True)
        # In this section's process group: a section killed at its budget takes both ranks with it.
        completed = subprocess.run(command, cwd=REPO_ROOT, timeout=max(10.0, context.time_left()))
        require(completed.returncode == 0, f"runner.py exited with {completed.returncode}")
        probes = read_probes(run_folder(context, "GpuCheckBYOL", "ddp_two_gpus"))
        figures.update(probe_figures(probes[0]))
        check_ddp_probes(probes, 2, "nccl", sync_batchnorm=True)

    run_check(context, emit, "ddp.two_gpus", "DDP with two GPUs: NCCL, SyncBatchNorm, 2 processes", two_processes)


# --- running sections in their own processes -------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    id: str
    function: Callable[[Context, Emit], None]
    check_ids: Callable[[Plan], list[str]]
    """The checks the section reports, so that a crash or timeout still gives every one a row."""


def throughput_ids(prefix: str) -> Callable[[Plan], list[str]]:
    return lambda plan: [f"{prefix}.{s.name}.{p}" for s in plan.settings for p in PIPELINES]


SECTIONS: tuple[Section, ...] = (
    Section("data", section_data, lambda plan: ["data.decode_cache"]),
    Section("augmentation", section_augmentation, lambda plan: ["augmentation.no_sync"]),
    Section("throughput.BYOL", section_throughput_byol, throughput_ids("throughput.BYOL")),
    Section("training.ssl_run", section_ssl_run, lambda plan: ["training.ssl_run"]),
    Section("training.classifier_run", section_classifier_run, lambda plan: ["training.classifier_run"]),
    Section("ddp.one_gpu", section_ddp_one_gpu, lambda plan: ["ddp.one_gpu"]),
    Section("ddp.two_gpus", section_ddp_two_gpus, lambda plan: ["ddp.two_gpus"]),
    Section("training.fp16_run", section_fp16_run, lambda plan: ["training.fp16_run"]),
    Section("throughput.SimCLR", section_throughput_simclr, throughput_ids("throughput.SimCLR")),
    Section(
        "throughput.ViT",
        section_throughput_vit,
        lambda plan: throughput_ids("throughput.ViT")(plan) if vit_encoder(plan.mode)[0] else ["throughput.ViT"],
    ),
    Section(
        "throughput.DINO_multi_crop",
        section_throughput_dino_multi_crop,
        lambda plan: [f"throughput.DINO_multi_crop.{plan.dino_setting}.{pipeline}" for pipeline in PIPELINES],
    ),
)


def section_process(section_id: str, context: Context, results: Any, log_path: str) -> None:
    """A section's process: its own process group (so that a timeout kills its workers too), its output in its log."""
    os.setpgrp()
    os.chdir(REPO_ROOT)  # the configs' augmentation files are relative to the repository
    log = open(log_path, "a", buffering=1)  # this process's stdout and stderr until it exits
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    sys.stdout = sys.stderr = log
    if context.plan.torch_threads is not None:
        torch.set_num_threads(context.plan.torch_threads)
    section = next(s for s in SECTIONS if s.id == section_id)
    try:
        section.function(context, lambda result: results.put(("result", dataclasses.asdict(result))))
        results.put(("done", None))
    except BaseException as error:  # reported to the parent, which goes on with the next section
        traceback.print_exc()
        results.put(("error", one_line(error)))
    finally:
        sys.stdout.flush()


def log_tail(path: Path, lines: int = 3) -> str:
    with contextlib.suppress(OSError):
        tail = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        return " | ".join(tail[-lines:])[-400:]
    return ""


class Reporter:
    """Collects the checks, prints each as it arrives, writes the JSON after every section."""

    def __init__(self, output: Path, header: dict[str, Any], start: float) -> None:
        self.output = output
        self.header = header
        self.start = start
        self.results: list[CheckResult] = []

    def add(self, result: CheckResult) -> None:
        self.results.append(result)
        figure = result.figures.get("pairs_per_s")
        detail = f"{figure:.1f} pairs/s" if isinstance(figure, float) else ""
        if "vs_compute" in result.figures:
            detail += f" ({result.figures['vs_compute']:.0%} of compute-only)"
        line = f"[{time.time() - self.start:6.1f} s] {result.status:<7} {result.id:<58} {detail} {result.reason}"
        print(line.rstrip(), flush=True)

    def write_json(self, summary: dict[str, Any] | None = None) -> Path:
        path = self.output / JSON_NAME
        content = {
            **self.header,
            "wall_s": round(time.time() - self.start, 1),
            "checks": [dataclasses.asdict(result) for result in self.results],
            "summary": summary or {},
        }
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(content, indent=2, default=str))
        temporary.replace(path)
        return path


def run_section(section: Section, context: Context, reporter: Reporter, budget_s: float) -> list[CheckResult]:
    """Runs ``section`` in its own process for at most ``budget_s``; every expected check gets a row."""
    expected = section.check_ids(context.plan)
    log_path = context.output / "logs" / f"{section.id}.log"
    process_context = multiprocessing.get_context(context.plan.start_method)
    results = process_context.Queue()
    sys.stdout.flush()
    sys.stderr.flush()
    process = process_context.Process(target=section_process, args=(section.id, context, results, str(log_path)))
    process.start()
    received: list[CheckResult] = []
    ending = ""
    try:
        ending = collect(process, results, received, reporter, budget_s, log_path, section.id)
        if not ending:  # a finished section exits by itself (its workers and process groups torn down)
            process.join(timeout=EXIT_GRACE_S)
    finally:  # also on Ctrl-C: the section's process group would run on, out of the terminal's reach
        if process.is_alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the section's process group: it and its workers
        process.join(timeout=EXIT_GRACE_S)
    seen = {result.id for result in received}
    for check_id in expected:
        if check_id not in seen:
            result = CheckResult(check_id, check_id, FAILED, reason=f"not reported: the section {ending}")
            received.append(result)
            reporter.add(result)
    return received


def collect(
    process: Any,
    results: Any,
    received: list[CheckResult],
    reporter: Reporter,
    budget_s: float,
    log_path: Path,
    section_id: str,
) -> str:
    """Reports the section's checks as they come until it ends; returns how it ended when not normally."""
    start = time.time()
    while True:
        try:
            kind, payload = results.get(timeout=1.0)
        except queue.Empty:
            if not process.is_alive():
                return f"process died (exit code {process.exitcode}): {log_tail(log_path)}"
            if time.time() - start > budget_s:
                return f"timed out after {budget_s:.0f} s (its budget)"
            continue
        if kind == "result":
            result = CheckResult(**payload)
            received.append(result)
            reporter.add(result)
        elif kind == "error":
            return f"failed: {payload} (see logs/{section_id}.log)"
        else:
            return ""


def goal_result(results: list[CheckResult], plan: Plan) -> CheckResult:
    """innerssl's end-to-end BYOL rate / compute-only, from the fastest setting measured."""
    title = f"BYOL end-to-end / compute-only >= {GOAL_END_TO_END_RATIO:.0%} (innerssl's pipeline)"
    if plan.cpu:
        return CheckResult("goal.byol_end_to_end", title, SKIPPED, reason="CPU mode: the goal is a GPU's")
    by_id = {result.id: result for result in results}
    for setting in reversed(plan.settings):  # the fastest setting first
        measured = by_id.get(f"throughput.BYOL.{setting.name}.innerssl_end_to_end")
        if measured is not None and measured.status == OK:
            ratio = measured.figures["vs_compute"]
            status = OK if ratio >= GOAL_END_TO_END_RATIO else MISSED
            figures = {"vs_compute": ratio, "setting": setting.name, "pairs_per_s": measured.figures["pairs_per_s"]}
            return CheckResult("goal.byol_end_to_end", title, status, figures, f"{setting.name}: {ratio:.1%}")
    return CheckResult("goal.byol_end_to_end", title, SKIPPED, reason="no end-to-end BYOL rate was measured")


# --- the table -------------------------------------------------------------------------------------------


def note_of(result: CheckResult) -> str:
    """The figures that are not table columns, shortly, and the reason."""
    figures = result.figures
    parts = []
    for name in (
        "images",
        "source_px",
        "build_s",
        "cache_mb",
        "cases",
        "first_step_s",
        "first_batch_s",
        "steps",
        "precision",
        "strategy",
        "world_size",
        "backend",
        "sync_batchnorm_layers",
        "compiled",
        "losses",
        "gradient_scale",
        "encoder_tensors_equal",
        "loader_may_bound",
        "capped_at_s",
        "views",
        "unit",
        "steps_per_s",
        "note",
    ):
        if name in figures and figures[name] not in (None, "", {}):
            parts.append(f"{name}={figures[name]}")
    if result.reason:
        parts.append(result.reason)
    return "; ".join(str(part) for part in parts)


def table(results: list[CheckResult]) -> str:
    header = ("check", "status", "pairs/s", "e2e/compute", "peak GPU MiB", "s", "note")
    rows = []
    for result in results:
        figures = result.figures
        rate = figures.get("pairs_per_s")
        ratio = figures.get("vs_compute")
        memory = figures.get("peak_gpu_mib")
        rows.append(
            (
                result.id,
                result.status,
                f"{rate:.1f}" if isinstance(rate, int | float) else "-",
                f"{ratio:.2f}" if isinstance(ratio, int | float) else "-",
                f"{memory:.0f}" if isinstance(memory, int | float) else "-",
                f"{result.seconds:.1f}",
                note_of(result),
            )
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
        if row is header:
            lines.append("  ".join("-" * width for width in widths) + "  " + "-" * 4)
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------------------


def environment(plan: Plan, images: Path, images_note: str) -> dict[str, Any]:
    import pytorch_lightning

    info: dict[str, Any] = {
        "mode": plan.mode,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "cpu_count": os.cpu_count(),
        "images": str(images),
        "images_note": images_note,
    }
    if plan.mode == "gpu":
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=properties.name,
            gpu_count=torch.cuda.device_count(),
            gpu_memory_gib=round(properties.total_memory / 1024**3, 1),
            compute_capability=f"{properties.major}.{properties.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            nccl=".".join(str(part) for part in torch.cuda.nccl.version()) if hasattr(torch.cuda, "nccl") else None,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    else:
        info.update(cpu_bf16=cpu_supports_bf16())
    return info


def parse_injections(text: str) -> dict[str, str]:
    injections = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        check_id, _, action = item.partition(":")
        if action not in ("", "raise", "hang"):
            raise SystemExit(f"--inject_failure={item}: the action after ':' must be raise or hang")
        injections[check_id] = action or "raise"
    return injections


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--mode", choices=["auto", "gpu", "cpu"], default="auto", help="auto: gpu when CUDA is available"
    )
    parser.add_argument("--output_folder", default=None, help="default: outputs/gpu_check/<time>")
    parser.add_argument(
        "--images",
        default=None,
        help=f"folder of radiographs (default: {DEFAULT_IMAGES.relative_to(REPO_ROOT.parent)} beside the repository; "
        "generated 1024 px PNGs when it is absent)",
    )
    parser.add_argument("--sections", default="", help="comma-separated section ids or prefixes to run (default: all)")
    parser.add_argument("--deadline_s", type=float, default=None, help="global deadline (default: GPU 450, CPU 100)")
    parser.add_argument("--budget_scale", type=float, default=1.0, help="multiplies every section's time budget")
    parser.add_argument("--inject_failure", default="", help="test hook: CHECK_ID[:raise|hang], comma-separated")
    parser.add_argument("--cpu_compile_backend", default=None, help="CPU mode: run the compiled setting with it")
    parser.add_argument("--run_ddp_on_cpu", action="store_true", help="CPU mode: run ddp.one_gpu with gloo")
    parser.add_argument("--keep_work", action="store_true", help="keep the temporary folder (runs, caches)")
    return parser.parse_args(argv)


def selected(section_id: str, selection: list[str]) -> bool:
    return not selection or any(section_id == s or section_id.startswith(s + ".") for s in selection)


def prepare_images(args: argparse.Namespace, plan: Plan, work: Path) -> tuple[Path, str]:
    """The image folder and what it is: the given one, the NIH sample beside the repository, or generated."""
    if args.images:
        folder = Path(args.images).resolve()
        if not folder.is_dir():
            raise SystemExit(f"--images={args.images} is not a folder")
        return folder, "given with --images"
    if DEFAULT_IMAGES.is_dir() and any(DEFAULT_IMAGES.glob("*.png")):
        return DEFAULT_IMAGES, "the NIH sample (real 1024 px chest X-rays)"
    folder = work / "generated_images"
    data_throughput.generate_images(folder, plan.generated_images, seed=0)
    note = f"GENERATED: {plan.generated_images} synthetic 1024 px PNGs ({DEFAULT_IMAGES} not found)"
    return folder, note


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.time()
    injected = parse_injections(args.inject_failure)
    cuda = torch.cuda.is_available()
    mode = args.mode if args.mode != "auto" else ("gpu" if cuda else "cpu")
    if mode == "gpu" and not cuda:
        print("error: --mode=gpu but CUDA is not available", file=sys.stderr)
        return 2
    plan = gpu_plan(args.deadline_s) if mode == "gpu" else cpu_plan(args.deadline_s, args.cpu_compile_backend)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    output = Path(args.output_folder or REPO_ROOT / "outputs" / "gpu_check" / stamp).resolve()
    (output / "logs").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="innerssl-gpu-check-"))
    deadline = start + plan.deadline_s
    try:
        images, images_note = prepare_images(args, plan, work)
        info = environment(plan, images, images_note)
        if plan.cpu:
            print("=" * 100)
            print(
                "CPU MODE (no CUDA device): a tiny version that tests this script (ResNet-18, "
                f"{plan.view_size} px views, batch {plan.batch_size}, {plan.timed_steps} timed step(s), no compile, "
                "no fp16/NCCL). Its figures are NOT GPU measurements."
            )
            print("=" * 100)
        else:
            print(f"GPU MODE: {info['gpu']} x{info['gpu_count']}, torch {info['torch']}, CUDA {info['cuda']}")
        print(f"images: {images} ({images_note}); deadline {plan.deadline_s:.0f} s; output {output}", flush=True)
        context = Context(plan, work, output, images, deadline - REPORT_RESERVE_S, injected, args.run_ddp_on_cpu)
        reporter = Reporter(output, {"started": stamp, "environment": info, "mode": plan.mode}, start)
        selection = [s.strip() for s in args.sections.split(",") if s.strip()]
        for section in SECTIONS:
            run_one(section, context, reporter, plan, selection, args.budget_scale)
            reporter.write_json()
        results = reporter.results
        results.append(goal_result(results, plan))
        order = canonical_order(plan)
        results.sort(key=lambda result: order.get(result.id, len(order)))
        failed = [result.id for result in results if result.status == FAILED]
        summary = {
            "failed": failed,
            "skipped": [result.id for result in results if result.status == SKIPPED],
            "missed_goals": [result.id for result in results if result.status == MISSED],
            "exit_code": 1 if failed else 0,
        }
        print()
        if plan.cpu:
            print("CPU MODE: tiny settings on the CPU; the figures test the script, they are not GPU measurements.")
        print(table(results))
        path = reporter.write_json(summary)
        print(
            f"\n{len(results)} checks: {len(failed)} failed, {len(summary['skipped'])} skipped, "
            f"{len(summary['missed_goals'])} below goal; {time.time() - start:.0f} s; JSON: {path}"
        )
        if failed:
            print(f"FAILED: {', '.join(failed)} (logs in {output / 'logs'})")
        return summary["exit_code"]
    finally:
        if args.keep_work:
            print(f"kept the work folder {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def canonical_order(plan: Plan) -> dict[str, int]:
    """Table position of every check id: the sections' order, the goal right after the BYOL throughput."""
    ids: list[str] = []
    for section in SECTIONS:
        ids += section.check_ids(plan)
        if section.id == "throughput.BYOL":
            ids.append("goal.byol_end_to_end")
    return {check_id: index for index, check_id in enumerate(ids)}


def run_one(
    section: Section, context: Context, reporter: Reporter, plan: Plan, selection: list[str], budget_scale: float
) -> None:
    """Runs a section when it is selected, can run here, and fits before the deadline; reports why not otherwise."""

    def skip_all(reason: str) -> None:
        for check_id in section.check_ids(plan):
            reporter.add(CheckResult(check_id, check_id, SKIPPED, reason=reason))

    if not selected(section.id, selection):
        return skip_all("not selected (--sections)")
    unavailable = unavailable_reason(section.id, plan.mode)
    if unavailable:
        return skip_all(unavailable)
    budget = min(plan.budgets_s[section.id] * budget_scale, context.time_left())
    if budget < MIN_SECTION_S:
        return skip_all(f"global deadline ({plan.deadline_s:.0f} s) reached")
    received = run_section(section, context, reporter, budget)
    if section.id == "training.ssl_run":
        ssl = next((r for r in received if r.id == "training.ssl_run" and r.status == OK), None)
        context.ssl_checkpoint = ssl.figures.get("checkpoint") if ssl else None


if __name__ == "__main__":
    raise SystemExit(main())
