"""Data pipeline throughput: the usual per-sample loader against innerssl's decode cache + batched augmentation.

Measures, on a folder of large radiographs (default: the shared NIH sample, 1024 px PNGs; ``--images`` for
another folder, or generated images when there is none), in image PAIRS per second (two SSL views each):

(a) baseline: PIL decode of every file + torchvision v2 RandomResizedCrop, flip, colour jitter, blur, solarize,
    per sample, twice, in DataLoader workers (the InnerEye / lightly / Quadra-style loader);
(b) innerssl: the decode-once cache (built here first: its build time, size on disk) read a batch at a time by
    the workers, moved to the device and augmented there in batches with the same semantics;
(b') the same with the cache read in the training process (no loader workers);
(c) innerssl's cache with the per-sample pipeline (what the cache alone gives);

first as loaders alone, then as full BYOL training steps (resnet18 on the CPU, resnet50 on a GPU) next to a
compute-only step on device-resident random input. Beside these two-view figures, DINO's multi-crop views (2 global
crops of ``--view_size``, scale 0.4-1, + ``--local_crops`` local crops, scale 0.05-0.4, of DINO's default size
relative to the global side, 96 px of 224, or ``--local_view_size`` px; the views DINO declares for these settings)
in IMAGES per second (all views of an image each): (a) and (b) as loaders, and (b) as DINO training steps next to
its compute-only step (``--local_crops=0`` leaves the multi-crop rows out). Every phase runs in its own process, so
its peak RSS (main process, and largest loader worker) is its own. Prints the ratios b/a, for training b/compute,
and innerssl's multi-crop images/s against its two-view images/s (a pair is one image) of the same run. Folders
with fewer images than a few batches are repeated (``--repeat_items``), so that batches of 256 fill an epoch.
``benchmarks/gpu_check.py`` reuses these loaders and steps (``parse_args`` takes a flag list).

    python benchmarks/data_throughput.py                       # defaults for this machine
    python benchmarks/data_throughput.py --images=/data/nih/images_001/images --batch_size=256 --precision=bf16
"""

from __future__ import annotations

import argparse
import inspect
import math
import multiprocessing
import os
import queue
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from innerssl.augment.config import AugmentationConfig, parse_augmentation_config  # noqa: E402
from innerssl.augment.views import ViewGroup, total_views, view_shape  # noqa: E402
from innerssl.data.cache import CacheSettings, cached_dataset  # noqa: E402
from innerssl.data.datasets.base import UNLABELED, ImageFileDataset, ImageRecord  # noqa: E402
from innerssl.data.image_io import read_image  # noqa: E402
from innerssl.data.pipeline import ImageStream  # noqa: E402

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "nih-sample" / "images"
GENERATED_IMAGE_SIZE = 1024
VIEW_SIZE = 224
CACHE_SIZE = 256
MB = 1024 * 1024
MAIN_PROCESS_KIND = "innerssl_0_workers"
"""innerssl's pipeline reading the cache in the training process: on a small CPU, loader workers copying
batches compete with the augmentation for the same cores."""

# SimCLR-style views of a radiograph, the same for every pipeline (the baseline spells them in torchvision).
CROP_SCALE = (0.08, 1.0)
FLIP_PROBABILITY = 0.5
JITTER = 0.4
BLUR_KERNEL = 23
BLUR_SIGMA = (0.1, 2.0)
BLUR_PROBABILITY = 0.5
SOLARIZE_THRESHOLD = 0.5
SOLARIZE_PROBABILITY = 0.2

# DINO's multi-crop (the paper's): 2 global crops of VIEW_SIZE, LOCAL_CROPS local crops of LOCAL_VIEW_SIZE px.
GLOBAL_CROP_SCALE = (0.4, 1.0)
"""The paper's global crop scale with local crops (DINO's own default is the augmentation config's)."""
LOCAL_CROPS = 6
LOCAL_VIEW_SIZE = 96
"""What DINO's default relative local size gives for VIEW_SIZE; other view sizes get that fraction of theirs."""
LOCAL_CROP_SCALE = (0.05, 0.4)
MULTI_CROP = "multi_crop"
"""Suffix of the multi-crop pipelines' kinds (``innerssl_multi_crop``, ``baseline_multi_crop``) and the compute
phase; their rates are images per second with every view of an image."""
MULTI_CROP_METHOD = "DINO"

MIN_BATCHES_PER_EPOCH = 8
"""Default --repeat_items: an epoch of at least this many batches (the 216-image NIH sample has fewer than one
batch of 256, and a loader that drops its last partial batch would yield nothing)."""


def project_config_dict(cache_size: int = CACHE_SIZE, view_size: int = VIEW_SIZE) -> dict[str, Any]:
    """The views in innerssl's YAML schema, from ``cache_size`` px stored images to ``view_size`` px views."""
    return {
        "preprocess": {"resize": cache_size, "center_crop_size": view_size},
        "augmentation": {
            "use_random_crop": True,
            "use_random_horizontal_flip": True,
            "use_random_color": True,
            "use_gaussian_blur": True,
            "use_solarize": True,
            "random_crop": {"scale": list(CROP_SCALE)},
            "random_horizontal_flip": {"prob": FLIP_PROBABILITY},
            "random_color": {"brightness": JITTER, "contrast": JITTER},
            "gaussian_blur": {
                "kernel_fraction": BLUR_KERNEL / VIEW_SIZE,
                "sigma": list(BLUR_SIGMA),
                "p_apply": BLUR_PROBABILITY,
            },
            "solarize": {"threshold": SOLARIZE_THRESHOLD, "p_apply": SOLARIZE_PROBABILITY},
        },
    }


PROJECT_CONFIG = project_config_dict()


def project_config(cache_size: int = CACHE_SIZE, view_size: int = VIEW_SIZE) -> AugmentationConfig:
    return parse_augmentation_config(project_config_dict(cache_size, view_size), "benchmark config")


def blur_kernel(view_size: int) -> int:
    """The baseline's blur kernel for ``view_size`` px views: the same fraction of the view as BLUR_KERNEL of 224
    px (odd, as torchvision needs)."""
    return max(3, round(BLUR_KERNEL * view_size / VIEW_SIZE) // 2 * 2 + 1)


# --- (a) the baseline ------------------------------------------------------------------------------------


def baseline_transform(view_size: int, crop_scale: tuple[float, float] = CROP_SCALE) -> v2.Compose:
    """The views of PROJECT_CONFIG in torchvision, from a PIL image (cropped and resized to ``view_size`` px)."""
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomResizedCrop(view_size, scale=crop_scale, antialias=True),
            v2.RandomHorizontalFlip(FLIP_PROBABILITY),
            v2.ColorJitter(brightness=JITTER, contrast=JITTER),
            v2.RandomApply([v2.GaussianBlur(blur_kernel(view_size), sigma=BLUR_SIGMA)], p=BLUR_PROBABILITY),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomSolarize(SOLARIZE_THRESHOLD, p=SOLARIZE_PROBABILITY),
        ]
    )


class BaselineDataset(Dataset):
    """PIL decode + per-sample torchvision views, as the usual SSL loaders do: two views of ``view_size`` px, or the
    views of ``groups`` (DINO's multi-crop: each group's size and crop scale)."""

    def __init__(
        self, paths: list[Path], view_size: int = VIEW_SIZE, groups: Sequence[ViewGroup] | None = None
    ) -> None:
        self.paths = paths
        if groups is None:
            self.transforms = [(baseline_transform(view_size), 2)]
        else:
            self.transforms = [
                (baseline_transform(view_shape(g.size, view_size, view_size)[0], g.crop_scale or CROP_SCALE), g.count)
                for g in groups
            ]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[tuple[torch.Tensor, ...], int]:
        with Image.open(self.paths[index]) as image:
            image = image.convert("L")
            return tuple(transform(image) for transform, count in self.transforms for _ in range(count)), 0


# --- (b), (c) innerssl ----------------------------------------------------------------------------------


def file_dataset(paths: list[Path]) -> ImageFileDataset:
    return ImageFileDataset([ImageRecord(path) for path in paths], UNLABELED, read_image)


def build_cache(paths: list[Path], cache_root: Path, workers: int, image_size: int = CACHE_SIZE) -> Dataset:
    settings = CacheSettings(root=cache_root, image_size=image_size, num_workers=workers)
    return cached_dataset(file_dataset(paths), settings)


class RepeatedDataset(Dataset):
    """``dataset`` repeated to ``length`` items (index i reads item i mod len), keeping batched reads.

    The decode cache serves whole batches through ``__getitems__``; this passes them on (indices wrapped), so a
    small folder repeated to a few thousand items reads as fast as a large dataset would.
    """

    def __init__(self, dataset: Dataset, length: int) -> None:
        self.dataset = dataset
        self.length = length
        self.size = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Any:
        return self.dataset[index % self.size]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        wrapped = [index % self.size for index in indices]
        batched_read = getattr(self.dataset, "__getitems__", None)
        if callable(batched_read):
            return batched_read(wrapped)
        return [self.dataset[index] for index in wrapped]


def repeated(dataset: Dataset, min_items: int) -> Dataset:
    """``dataset`` itself when it has ``min_items`` items, else repeated to whole copies of at least that many."""
    size = len(dataset)  # type: ignore[arg-type]
    if size >= min_items:
        return dataset
    return RepeatedDataset(dataset, math.ceil(min_items / size) * size)


def repeat_items(args: argparse.Namespace, batch_size: int) -> int:
    """Items an epoch holds at least: ``--repeat_items``, or MIN_BATCHES_PER_EPOCH batches when it is 0."""
    return args.repeat_items or MIN_BATCHES_PER_EPOCH * batch_size


# --- measuring -------------------------------------------------------------------------------------------


def endless(loader: DataLoader) -> Iterator[Any]:
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise RuntimeError(f"the loader yields no batch (fewer items than a batch of {loader.batch_size})")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pairs_per_second(
    batches: Iterator[Any],
    step: Callable[[Any], None],
    num_batches: int,
    batch_size: int,
    device: torch.device,
    warmup_batches: int = 1,
) -> float:
    """Pairs per second over ``num_batches`` batches, after ``warmup_batches`` untimed ones (worker start,
    compilation)."""
    for _ in range(warmup_batches):
        step(next(batches))
    synchronize(device)
    start = time.perf_counter()
    for _ in range(num_batches):
        step(next(batches))
    synchronize(device)
    return num_batches * batch_size / (time.perf_counter() - start)


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident memory of this process and of its largest (finished) child, in MB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def make_loader(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def dino_defaults() -> dict[str, Any]:
    """DINO's constructor defaults (its multi-crop settings among them), read from its signature: the flags of a
    DINO run default to these, and the SSL container need not list them."""
    from innerssl.ssl.dino import DINO

    parameters = inspect.signature(DINO.__init__).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def multi_crop_hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    """DINO's multi-crop settings of this benchmark: 2 global crops, ``--local_crops`` local crops of
    ``--local_view_size`` px, or (0) of DINO's default size relative to the global views."""
    size = float(args.local_view_size) if args.local_view_size > 0 else float(dino_defaults()["local_crop_size"])
    return {
        "num_local_crops": args.local_crops,
        "local_crop_size": size,
        "global_crop_scale": list(GLOBAL_CROP_SCALE),
        "local_crop_scale": list(LOCAL_CROP_SCALE),
    }


def multi_crop_groups(args: argparse.Namespace) -> tuple[ViewGroup, ...]:
    """The views DINO declares for the multi-crop settings (what a DINO run's stream makes)."""
    from innerssl.ssl.dino import DINO

    return DINO.view_groups(multi_crop_hyperparameters(args))


def loader_batches(kind: str, args: argparse.Namespace, device: torch.device) -> tuple[Iterator[Any], Callable]:
    """The batches of pipeline ``kind`` and the function that turns one into its views on the device (two, or
    DINO's multi-crop views for the ``*_multi_crop`` kinds)."""
    paths = image_paths(args)
    min_items = repeat_items(args, args.batch_size)
    multi_crop = kind.endswith(f"_{MULTI_CROP}")
    kind = kind.removesuffix(f"_{MULTI_CROP}")
    groups = multi_crop_groups(args) if multi_crop else None
    if kind == "baseline":
        dataset = repeated(BaselineDataset(paths, args.view_size, groups), min_items)
        loader = make_loader(dataset, args.batch_size, args.workers, device)

        def to_views(batch: Any) -> tuple[torch.Tensor, ...]:
            views, _ = batch
            return tuple(view.to(device, non_blocking=True) for view in views)

        return endless(loader), to_views
    cache = repeated(build_cache(paths, Path(args.cache_root), args.workers, args.cache_size), min_items)
    config = project_config(args.cache_size, args.view_size)
    stream = ImageStream(config, in_channels=1, augment_on_device=kind == "innerssl", views=groups or 2)
    stream.reseed(args.seed)
    loader = make_loader(stream.loader_dataset(cache), args.batch_size, args.workers, device)

    def to_views_project(batch: Any) -> tuple[torch.Tensor, ...]:
        images, labels = batch
        if stream.on_device:
            return stream.to_encoder(images.to(device, non_blocking=True))
        return tuple(view.to(device, non_blocking=True) for view in images)

    return endless(loader), to_views_project


def ssl_step(
    args: argparse.Namespace,
    device: torch.device,
    method: str | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> Callable[..., None]:
    """One optimisation step of SSL method ``method`` (default ``args.method``) on the views it is given (loss,
    backward, AdamW step and, for methods with an EMA target such as BYOL, the target update) with the run's
    precision, memory format and compilation; ``hyperparameters``: further arguments of the method."""
    from innerssl.compile import compile_networks
    from innerssl.ssl import ssl_method
    from innerssl.ssl.momentum import MomentumSSLModule

    # Construction options (a ViT's img_size and patch_size) only when given: methods without them keep working.
    options = {"encoder_options": parse_options(args.encoder_options)} if args.encoder_options else {}
    options.update(hyperparameters or {})
    module = ssl_method(method or args.method)(encoder_name=args.encoder, in_channels=1, **options).to(device)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    module = module.to(memory_format=memory_format)
    if args.compile:
        compile_networks(module, backend=args.compile_backend)
    has_target = isinstance(module, MomentumSSLModule)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if args.precision == "bf16" else None

    def step(*views: torch.Tensor) -> None:
        views = tuple(view.contiguous(memory_format=memory_format) for view in views)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = module.ssl_loss(*views)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if has_target:
            module.update_target(module.hparams.base_momentum)

    return step


def parse_options(text: str) -> dict[str, Any]:
    """``img_size=32,patch_size=8`` -> ``{"img_size": 32, "patch_size": 8}`` (integers where the value is one)."""
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        options[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return options


byol_step = ssl_step
"""The step of ``--method`` (default BYOL), under its earlier name."""


def run_phase(phase: str, args: argparse.Namespace, results: Any) -> None:
    """One measurement in this (fresh) process; puts (phase, pairs/s, peak RSS own, peak RSS workers)."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    kind, _, mode = phase.partition(":")
    if kind == "cache_build":
        start = time.perf_counter()
        cache = build_cache(image_paths(args), Path(args.cache_root), args.workers, args.cache_size)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in Path(args.cache_root).rglob("*") if f.is_file())
        results.put((phase, {"seconds": seconds, "images": len(cache), "size_mb": size / MB}, *peak_rss_mb()))
        return
    if kind == "compute":
        step = ssl_step(args, device)
        fixed = torch.rand(2, args.train_batch_size, 1, args.view_size, args.view_size, device=device)
        rate = timed_pairs_per_second(
            iter(lambda: fixed, None), lambda views: step(*views), args.train_steps, args.train_batch_size, device
        )
        results.put((phase, rate, *peak_rss_mb()))
        return
    if kind == f"compute_{MULTI_CROP}":
        step = ssl_step(args, device, MULTI_CROP_METHOD, multi_crop_hyperparameters(args))
        fixed_views = [
            torch.rand(args.train_batch_size, 1, *view_shape(group.size, args.view_size, args.view_size), device=device)
            for group in multi_crop_groups(args)
            for _ in range(group.count)
        ]
        rate = timed_pairs_per_second(
            iter(lambda: fixed_views, None), lambda views: step(*views), args.train_steps, args.train_batch_size, device
        )
        results.put((phase, rate, *peak_rss_mb()))
        return
    batch_size = args.batch_size if mode == "loader" else args.train_batch_size
    workers = 0 if kind == MAIN_PROCESS_KIND else args.workers
    kind = "innerssl" if kind == MAIN_PROCESS_KIND else kind
    args = argparse.Namespace(**{**vars(args), "batch_size": batch_size, "workers": workers})
    batches, to_views = loader_batches(kind, args, device)
    if mode == "loader":
        rate = timed_pairs_per_second(batches, to_views, args.loader_batches, batch_size, device)
    else:
        multi_crop = kind.endswith(MULTI_CROP)
        step = (
            ssl_step(args, device, MULTI_CROP_METHOD, multi_crop_hyperparameters(args))
            if multi_crop
            else ssl_step(args, device)
        )
        rate = timed_pairs_per_second(
            batches, lambda batch: step(*to_views(batch)), args.train_steps, batch_size, device
        )
    results.put((phase, rate, *peak_rss_mb()))


def image_paths(args: argparse.Namespace) -> list[Path]:
    """The folder's PNG/JPEG files in name order, the first ``--max_images`` of them when that is set."""
    folder = Path(args.images)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return paths[: args.max_images] if args.max_images else paths


def generate_images(folder: Path, count: int, seed: int) -> None:
    """Radiograph-sized (1024 px) 8-bit PNGs with smooth structure and noise, like real chest X-rays compress."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    coarse_size = 32
    for index in range(count):
        coarse = rng.uniform(0.1, 0.9, size=(coarse_size, coarse_size)).astype(np.float32)
        smooth = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
            (GENERATED_IMAGE_SIZE, GENERATED_IMAGE_SIZE), Image.Resampling.BICUBIC
        )
        pixels = np.asarray(smooth, dtype=np.float32) + rng.normal(0, 6, size=(GENERATED_IMAGE_SIZE,) * 2)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"generated_{index:05d}.png")


def measure(phase: str, args: argparse.Namespace) -> tuple[Any, float, float]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=run_phase, args=(phase, args, results))
    process.start()
    try:
        _, value, own, workers = results.get(timeout=args.phase_timeout)
    except queue.Empty:
        process.kill()
        raise RuntimeError(f"phase {phase} did not finish within {args.phase_timeout} s") from None
    process.join()
    return value, own, workers


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The settings; ``argv`` (default: the command line) as flags, so other scripts get the same defaults."""
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--images",
        default=str(DEFAULT_IMAGES) if DEFAULT_IMAGES.is_dir() else None,
        help="folder of PNG/JPEG radiographs (default: the shared NIH sample; generated if absent)",
    )
    parser.add_argument("--num_generated", type=int, default=256, help="images to generate when there is no folder")
    parser.add_argument("--max_images", type=int, default=0, help="use only the first N images (0: all)")
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers (and cache build)")
    parser.add_argument("--batch_size", type=int, default=256 if cuda else 64, help="pairs per loader batch")
    parser.add_argument("--loader_batches", type=int, default=20 if cuda else 8, help="timed loader batches")
    parser.add_argument("--train_batch_size", type=int, default=256 if cuda else 16, help="pairs per training step")
    parser.add_argument("--train_steps", type=int, default=30 if cuda else 3, help="timed training steps")
    parser.add_argument("--encoder", default="resnet50" if cuda else "resnet18")
    parser.add_argument("--method", default="BYOL", help="SSL method of the training steps (BYOL, SimCLR, ...)")
    parser.add_argument("--encoder_options", default="", help="encoder construction options, e.g. img_size=32")
    parser.add_argument("--view_size", type=int, default=VIEW_SIZE, help="side of the views in pixels")
    parser.add_argument("--cache_size", type=int, default=CACHE_SIZE, help="side of the cached images in pixels")
    parser.add_argument(
        "--local_crops",
        type=int,
        default=LOCAL_CROPS,
        help="multi-crop rows: DINO's local crops per image beside 2 global views (0: no such rows)",
    )
    parser.add_argument(
        "--local_view_size",
        type=int,
        default=0,
        help=f"side of the local crops in pixels (0: DINO's default fraction of --view_size, {LOCAL_VIEW_SIZE} of "
        f"{VIEW_SIZE})",
    )
    parser.add_argument(
        "--repeat_items",
        type=int,
        default=0,
        help=f"repeat the images to at least this many items (0: {MIN_BATCHES_PER_EPOCH} batches per epoch)",
    )
    parser.add_argument("--precision", choices=["32", "bf16"], default="bf16" if cuda else "32")
    parser.add_argument("--channels_last", action=argparse.BooleanOptionalAction, default=cuda)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--compile_backend", default=None, help="torch.compile backend (default: inductor)")
    parser.add_argument("--skip_training", action="store_true", help="loaders only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase_timeout", type=float, default=1800)
    return parser.parse_args(argv)


def multi_crop_label(args: argparse.Namespace) -> str:
    """E.g. ``2 x 224 + 6 x 96 px views``: DINO's declared views for these settings."""
    groups = multi_crop_groups(args)
    sizes = [f"{g.count} x {view_shape(g.size, args.view_size, args.view_size)[0]}" for g in groups]
    return f"{' + '.join(sizes)} px views ({total_views(groups)} per image)"


def print_multi_crop_rows(args: argparse.Namespace, mode: str, rates: dict[str, float]) -> None:
    """Multi-crop loaders (baseline and innerssl) or DINO multi-crop training (innerssl and compute-only)."""
    if mode == "loader":
        kinds = [f"baseline_{MULTI_CROP}", f"innerssl_{MULTI_CROP}"]
        title = f"  multi-crop, {multi_crop_label(args)}, in images/s:"
    else:
        kinds = [f"innerssl_{MULTI_CROP}", f"compute_{MULTI_CROP}"]
        title = f"  {MULTI_CROP_METHOD} multi-crop training, {multi_crop_label(args)}, in images/s:"
    print(title, flush=True)
    for kind in kinds:
        phase = kind if kind.startswith("compute") else f"{kind}:{mode}"
        rate, own, workers = measure(phase, args)
        rates[phase] = rate
        print(f"  {kind:<22} {rate:9.1f} images/s  peak RSS {own:6.0f} MB main, {workers:6.0f} MB worker", flush=True)
    first, second = (rates[kind if kind.startswith("compute") else f"{kind}:{mode}"] for kind in kinds)
    if mode == "loader":
        print(f"  ratio innerssl / baseline (multi-crop): {second / first:.1f}x")
    else:
        print(f"  innerssl / compute-only (multi-crop): {first / second:.0%}")
    two_view, multi_crop = rates[f"innerssl:{mode}"], rates[f"innerssl_{MULTI_CROP}:{mode}"]
    print(
        f"  innerssl multi-crop vs two-view: {multi_crop:.1f} vs {two_view:.1f} images/s, ratio "
        f"{multi_crop / two_view:.2f}x ({total_views(multi_crop_groups(args))} vs 2 views per image)"
    )


def main() -> None:
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="innerssl-throughput-"))
    try:
        if args.images is None:
            args.images = str(workdir / "images")
            print(f"Generating {args.num_generated} {GENERATED_IMAGE_SIZE} px PNGs into {args.images}", flush=True)
            generate_images(Path(args.images), args.num_generated, args.seed)
        args.cache_root = str(workdir / "cache")
        count = len(image_paths(args))
        print(
            f"{count} images from {args.images}; device {args.device}, {args.workers} workers, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads; views {args.view_size} px, cache "
            f"{args.cache_size} px",
            flush=True,
        )
        build, own, workers = measure("cache_build", args)
        print(
            f"cache build: {build['seconds']:.1f} s for {build['images']} images "
            f"({build['seconds'] / build['images'] * 1000:.1f} ms per image), {build['size_mb']:.1f} MB on disk, "
            f"peak RSS {own:.0f} MB main, {workers:.0f} MB largest build worker (RSS counts pages shared with main)",
            flush=True,
        )
        modes = ["loader"] if args.skip_training else ["loader", "train"]
        rates: dict[str, float] = {}
        for mode in modes:
            trained = f"{args.method} {args.encoder}, {args.precision}"
            label = f"{mode} ({'loader only' if mode == 'loader' else trained})"
            print(f"\n{label}, batch {args.batch_size if mode == 'loader' else args.train_batch_size} pairs:")
            kinds = ["baseline", "innerssl", MAIN_PROCESS_KIND, "cached_per_sample"]
            kinds += ["compute"] if mode == "train" else []
            for kind in kinds:
                phase = kind if kind == "compute" else f"{kind}:{mode}"
                rate, own, workers = measure(phase, args)
                rates[phase] = rate
                print(
                    f"  {kind:<18} {rate:9.1f} pairs/s   peak RSS {own:6.0f} MB main, {workers:6.0f} MB worker",
                    flush=True,
                )
            baseline = rates[f"baseline:{mode}"]
            for kind in ("innerssl", MAIN_PROCESS_KIND):
                print(f"  ratio {kind} / baseline: {rates[f'{kind}:{mode}'] / baseline:.1f}x")
            if mode == "train":
                compute = rates["compute"]
                print(
                    f"  innerssl / compute-only: {rates['innerssl:train'] / compute:.0%}; "
                    f"baseline / compute-only: {baseline / compute:.0%}"
                )
            if args.local_crops > 0:
                print_multi_crop_rows(args, mode, rates)
        if not math.isfinite(sum(rates.values())):
            raise SystemExit("a measurement failed")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
