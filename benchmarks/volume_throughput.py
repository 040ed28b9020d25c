"""Training throughput on volumes: MONAI's tutorial pipeline, uncached, against innerssl's preprocess-once loading.

On the hippocampus sample (``--dataset``; its ``imagesTr`` volumes), over ``--epochs`` epochs with the same ROI
(``--roi``, 32^3) and samples per volume (``--samples_per_volume``, 4), in training volumes and samples per second:

(a) tutorial: MONAI's self-supervised tutorial's ``monai.data.Dataset`` with LoadImaged, EnsureChannelFirstd,
    (Orientationd, Spacingd when ``--orientation`` / ``--spacing`` are given), ScaleIntensityRanged
    (``--intensity_window``) or its percentile equivalent ScaleIntensityRangePercentilesd (0.5-99.5, as innerssl's
    ``--normalisation=percentile``), CropForegroundd, SpatialPadd to the ROI and RandSpatialCropSamplesd, every
    volume read and preprocessed again every epoch, through a DataLoader;
(b) MONAI's CacheDataset with the same transforms (the deterministic part cached once; its build time counted);
(c) innerssl: the dataset layout, ``load_split`` with the same steps as :class:`VolumePreprocessing` once per
    volume (its load time counted in the total and printed too), then ``PatchDataModule.train_dataloader``'s
    random patches (flips off, as the tutorial's crop has none).

The same ``--num_workers`` (default 0) and batch of ``--batch_size`` samples (the tutorial's loader takes
batch_size / samples_per_volume volumes a batch). Prints each pipeline's rates and the ratio innerssl / tutorial.

    python benchmarks/volume_throughput.py
    python benchmarks/volume_throughput.py --epochs=2 --orientation=RAS --spacing=2,1.5,1.5
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from innerssl.data.image_layouts import find_layout  # noqa: E402
from innerssl.data.normalisation import Normalisation  # noqa: E402
from innerssl.data.patch_datamodule import PatchDataModule, load_split  # noqa: E402
from innerssl.data.volume_preprocessing import VolumePreprocessing  # noqa: E402

DEFAULT_DATASET = REPO_ROOT.parent / "shared" / "data" / "hippocampus-sample"
PERCENTILES = (0.5, 99.5)


def floats(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="A Decathlon folder with imagesTr/")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--roi", type=int, default=32, help="ROI (patch) side in voxels, every axis")
    parser.add_argument("--samples_per_volume", type=int, default=4)
    parser.add_argument("--batch_size", type=int, default=4, help="samples per batch")
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument("--max_volumes", type=int, default=None, help="the first N volumes only")
    parser.add_argument("--orientation", default="", help="e.g. RAS (default: the files' axes)")
    parser.add_argument("--spacing", type=floats, default=[], help="mm, z,y,x as innerssl (default: no resampling)")
    parser.add_argument("--intensity_window", type=floats, default=[], help="low,high (default: percentiles)")
    parser.add_argument("--cache_dataset", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def volume_folder(dataset: Path, max_volumes: int | None, scratch: Path) -> tuple[Path, list[Path]]:
    """A Decathlon folder holding the first ``max_volumes`` images (links), and those images."""
    images = sorted((dataset / "imagesTr").glob("*.nii*"))
    if not images:
        raise SystemExit(f"no NIfTI volumes in {dataset / 'imagesTr'}: pass --dataset=<Decathlon folder>")
    if max_volumes is None or max_volumes >= len(images):
        return dataset, images
    images = images[:max_volumes]
    (scratch / "imagesTr").mkdir(parents=True)
    for image in images:
        (scratch / "imagesTr" / image.name).symlink_to(image.resolve())
    return scratch, images


def tutorial_transforms(args: argparse.Namespace) -> list[Any]:
    from monai import transforms as mt

    keys = ["image"]
    roi = (args.roi,) * 3
    steps: list[Any] = [mt.LoadImaged(keys=keys), mt.EnsureChannelFirstd(keys=keys)]
    if args.orientation:
        steps.append(mt.Orientationd(keys=keys, axcodes=args.orientation, labels=None))
    if args.spacing:
        steps.append(mt.Spacingd(keys=keys, pixdim=pixdim(args.spacing)))
    if args.intensity_window:
        low, high = args.intensity_window
        steps.append(mt.ScaleIntensityRanged(keys=keys, a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(
            mt.ScaleIntensityRangePercentilesd(
                keys=keys, lower=PERCENTILES[0], upper=PERCENTILES[1], b_min=0.0, b_max=1.0, clip=True
            )
        )
    steps += [
        mt.CropForegroundd(keys=keys, source_key="image"),
        mt.SpatialPadd(keys=keys, spatial_size=roi),
        mt.RandSpatialCropSamplesd(keys=keys, roi_size=roi, random_size=False, num_samples=args.samples_per_volume),
    ]
    return steps


def consume(batches: Iterable[Any]) -> int:
    """Samples in the batches (each touched, as a training step would)."""
    samples = 0
    for batch in batches:
        image = batch["image"]
        image = image.as_tensor() if hasattr(image, "as_tensor") else image  # MetaTensor indexing decollates meta
        samples += int(image.shape[0])
        float(image.reshape(-1)[0])
    return samples


def monai_rate(args: argparse.Namespace, images: list[Path], cached: bool) -> tuple[float, int, float]:
    """(total seconds, samples, one-off cache seconds) of MONAI's pipeline over the epochs."""
    from monai.data import CacheDataset, Dataset, list_data_collate
    from monai.transforms import Compose
    from monai.utils import set_determinism

    set_determinism(seed=args.seed)
    items = [{"image": str(image)} for image in images]
    start = time.perf_counter()
    transform = Compose(tutorial_transforms(args))
    if cached:
        dataset: Dataset = CacheDataset(items, transform, cache_rate=1.0, num_workers=None, progress=False)
    else:
        dataset = Dataset(items, transform)
    cache_seconds = time.perf_counter() - start
    loader = DataLoader(
        dataset,
        batch_size=max(1, args.batch_size // args.samples_per_volume),
        shuffle=True,
        num_workers=args.num_workers,
        collate_fn=list_data_collate,
        persistent_workers=args.num_workers > 0,
    )
    samples = sum(consume(loader) for _ in range(args.epochs))
    return time.perf_counter() - start, samples, cache_seconds


def pixdim(spacing: list[float]) -> tuple[float, ...]:
    """``--spacing`` (z,y,x, one value for all) as MONAI's pixdim (x,y,z)."""
    return tuple(reversed(spacing * 3 if len(spacing) == 1 else spacing))


def innerssl_rate(args: argparse.Namespace, folder: Path) -> tuple[float, int, float, str]:
    """(total seconds, samples, load-and-preprocess seconds, the steps) of innerssl's pipeline over the epochs."""
    roi = (args.roi,) * 3
    preprocessing = VolumePreprocessing(
        spatial_dims=3,
        orientation=args.orientation or None,
        spacing=pixdim(args.spacing) or None,  # type: ignore[arg-type]
        intensity_window=tuple(args.intensity_window) or None,  # type: ignore[arg-type]
        crop_foreground=True,
        pad_to=roi,
    )
    start = time.perf_counter()
    layout = find_layout(folder, 3, 0.0, 0.0, args.seed)
    train = load_split(layout, "train", Normalisation("percentile", PERCENTILES), "none", preprocessing=preprocessing)
    load_seconds = time.perf_counter() - start
    datamodule = PatchDataModule(
        train,
        [],
        [],
        patch_size=roi,
        patches_per_image=args.samples_per_volume,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        flip=False,
    )
    loader = datamodule.train_dataloader()
    samples = 0
    for epoch in range(args.epochs):
        loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        samples += consume(loader)
    return time.perf_counter() - start, samples, load_seconds, preprocessing.describe()


def line(name: str, seconds: float, volumes: int, samples: int, note: str) -> float:
    rate = volumes / seconds
    print(f"  {name:<34} {rate:8.1f} volumes/s {samples / seconds:9.1f} samples/s  {seconds:6.2f} s  {note}")
    return rate


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("innerssl").setLevel(logging.ERROR)  # "no validation split": every volume trains here
    import monai.transforms  # noqa: F401  (imported before timing: its first import takes seconds)

    with tempfile.TemporaryDirectory() as scratch:
        folder, images = volume_folder(args.dataset, args.max_volumes, Path(scratch) / "volumes")
        volumes = len(images) * args.epochs
        tutorial_seconds, tutorial_samples, _ = monai_rate(args, images, cached=False)
        cached = monai_rate(args, images, cached=True) if args.cache_dataset else None
        total, samples, load_seconds, steps = innerssl_rate(args, folder)
    print(
        f"Volume throughput on {args.dataset.name}: {len(images)} volumes x {args.epochs} epochs, ROI "
        f"{args.roi}^3, {args.samples_per_volume} samples per volume, batches of {args.batch_size} samples, "
        f"{args.num_workers} workers, {torch.get_num_threads()} torch threads; innerssl's steps: {steps}"
    )
    tutorial = line("tutorial (monai Dataset, uncached)", tutorial_seconds, volumes, tutorial_samples, "")
    if cached is not None:
        line("monai CacheDataset", cached[0], volumes, cached[1], f"(cache built in {cached[2]:.2f} s)")
    ours = line(
        "innerssl (load once + patches)",
        total,
        volumes,
        samples,
        f"(load + preprocess once {load_seconds:.2f} s, epochs {total - load_seconds:.2f} s)",
    )
    print(f"ratio innerssl / tutorial: {ours / tutorial:.2f}x")


if __name__ == "__main__":
    main()
