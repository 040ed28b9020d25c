"""Time the batched augmentation against kornia and against the per-sample torchvision path.

For each case (the chest X-ray SSL file on grayscale input; a SimCLR-like config on grayscale and
on RGB input; all 256 px -> 224 px) and batch size, prints the milliseconds per image per view of:

(a) ``innerssl.augment.batched.BatchedAugmentation`` on the whole batch,
(b) the equivalent ``kornia.augmentation`` pipeline, when kornia is installed (the same preprocess
    and channel conversion around it, so only the augmentations differ),
(c) the per-sample torchvision pipeline (``build_per_sample_transform``) looped over the images in
    one thread, as a data-loader worker runs it (N workers on N cores: up to N times the throughput),

and the ratios to (a). Input: random uint8 images ``(B, C, size, size)`` as a decode cache holds
them. Each figure is the median over ``--repeats`` timed calls after ``--warmup`` untimed ones (the
minimum is printed too, since a shared machine's timings are noisy).

Example::

    python benchmarks/batched_augmentation.py --batch-sizes 64 256 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from innerssl.augment.batched import build_batched_transform, elastic_kernel_size, preprocess
from innerssl.augment.config import AugmentationConfig, load_augmentation_config, parse_augmentation_config
from innerssl.augment.per_sample import RandomGaussianBlur, ToChannels, build_per_sample_transform

CXR_CONFIG = "augmentations/cxr_ssl_encoder_augmentations.yaml"
"""The chest X-ray SSL config (256 px -> 224 px, elastic included)."""

SIMCLR_LIKE: dict[str, Any] = {
    "preprocess": {"resize": 256, "center_crop_size": 224},
    "augmentation": {
        "use_random_crop": True,
        "use_random_horizontal_flip": True,
        "use_random_color": True,
        "use_gaussian_blur": True,
        "use_solarize": True,
        "random_crop": {"scale": [0.08, 1.0]},
        "random_color": {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "p_apply": 0.8},
        "gaussian_blur": {"kernel_fraction": 0.1, "sigma": [0.1, 2.0], "p_apply": 0.5},
        "solarize": {"threshold": 0.5, "p_apply": 0.2},
    },
}
"""BYOL's view recipe (SimCLR's crop, flip and colour jitter, plus blur and solarize) at 224 px."""

RGB_CHANNELS = 3

Timer = Callable[[torch.Tensor], torch.Tensor]


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cases = [
        ("cxr_ssl_encoder", load_augmentation_config(CXR_CONFIG), 1),
        ("simclr_like gray", parse_augmentation_config(SIMCLR_LIKE, "simclr_like"), 1),
        ("simclr_like rgb", parse_augmentation_config(SIMCLR_LIKE, "simclr_like"), 3),
    ]
    kornia = _import_kornia()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    if kornia is None:
        print("kornia is not installed: its column is skipped (pip install kornia to compare)")
    else:
        print(f"kornia {kornia.__version__}")
    print(f"input uint8 {args.input_size}x{args.input_size}; ms per image per view, median (min) of {args.repeats}")
    print("per-sample: one loop over the images in one thread, as one data-loader worker runs it")
    print()
    header = f"{'config':<18} {'batch':>5}  {'batched':>15}  {'kornia':>15} {'x':>6}  {'per-sample':>15} {'x':>6}"
    print(header)
    print("-" * len(header))
    for name, config, channels in cases:
        for batch_size in args.batch_sizes:
            images = torch.randint(0, 256, (batch_size, channels, args.input_size, args.input_size), dtype=torch.uint8)
            images = images.to(device)
            ours = _time_batch(build_batched_transform(config, channels, seed=0), images, args)
            theirs = None
            if kornia is not None:
                theirs = _time_batch(_kornia_pipeline(kornia, config, channels).to(device), images, args)
            per_sample = _time_per_sample(config, channels, images[: args.per_sample_images].cpu(), args)
            print(
                f"{name:<18} {batch_size:>5}  {_fmt(ours):>15}  {_fmt(theirs):>15} {_ratio(theirs, ours):>6}"
                f"  {_fmt(per_sample):>15} {_ratio(per_sample, ours):>6}"
            )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256], help="batch sizes to time")
    parser.add_argument("--input-size", type=int, default=256, help="side of the square uint8 input images")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument(
        "--per-sample-images", type=int, default=32, help="images the (slow) per-sample path is timed on"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="device of the batched and kornia paths (cpu, cuda)")
    return parser.parse_args()


def _measure(call: Callable[[], object], args: argparse.Namespace, device: torch.device) -> list[float]:
    """Seconds of each timed call (after the warm-up), synchronising the GPU around each one."""
    for _ in range(args.warmup):
        call()
    seconds = []
    for _ in range(args.repeats):
        _synchronize(device)
        start = time.perf_counter()
        call()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def _time_batch(transform: Timer, images: torch.Tensor, args: argparse.Namespace) -> tuple[float, float]:
    seconds = _measure(lambda: transform(images), args, images.device)
    return _per_image(seconds, images.shape[0])


def _time_per_sample(
    config: AugmentationConfig, channels: int, images: torch.Tensor, args: argparse.Namespace
) -> tuple[float, float]:
    transform = build_per_sample_transform(config, channels)

    def run() -> list[torch.Tensor]:
        return [transform(image) for image in images]

    # One thread, as in a data-loader worker (torch gives each worker one); with one worker per core
    # the per-sample path's throughput is up to (cores) times what this column says.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _per_image(_measure(run, args, images.device), images.shape[0])
    finally:
        torch.set_num_threads(threads)


def _per_image(seconds: list[float], count: int) -> tuple[float, float]:
    """(median, min) milliseconds per image."""
    return statistics.median(seconds) * 1000 / count, min(seconds) * 1000 / count


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fmt(timing: tuple[float, float] | None) -> str:
    return "-" if timing is None else f"{timing[0]:.3f} ({timing[1]:.3f})"


def _ratio(other: tuple[float, float] | None, ours: tuple[float, float]) -> str:
    return "-" if other is None else f"{other[0] / ours[0]:.1f}"


def _import_kornia() -> Any:
    try:
        import kornia
    except ImportError:
        return None
    return kornia


class _KorniaPipeline(torch.nn.Module):
    """Our preprocess and channel conversion around kornia's augmentations, for a like-for-like timing."""

    def __init__(self, config: AugmentationConfig, augmentations: torch.nn.Module, in_channels: int) -> None:
        super().__init__()
        self.config = config
        self.augmentations = augmentations
        self.to_channels = ToChannels(in_channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pre = self.config.preprocess
        batch = preprocess(images, pre.resize, pre.center_crop_size)
        return self.to_channels(self.augmentations(batch).clamp(0.0, 1.0)).contiguous()


def _kornia_pipeline(kornia: Any, config: AugmentationConfig, in_channels: int) -> torch.nn.Module:
    """The kornia.augmentation equivalent of the config's switched-on steps, in the same order."""
    augment = kornia.augmentation
    aug = config.augmentation
    rgb = in_channels == RGB_CHANNELS
    size = config.preprocess.center_crop_size
    if size is None:
        raise ValueError("The benchmark's kornia pipeline needs preprocess.center_crop_size")
    steps: list[torch.nn.Module] = []
    if aug.use_random_crop:
        crop = aug.random_crop
        steps.append(augment.RandomResizedCrop((size, size), scale=crop.scale, ratio=crop.ratio, align_corners=False))
    if aug.use_random_horizontal_flip:
        steps.append(augment.RandomHorizontalFlip(p=aug.random_horizontal_flip.prob))
    if aug.use_random_affine:
        affine = aug.random_affine
        shift = (affine.max_horizontal_shift, affine.max_vertical_shift)
        steps.append(
            augment.RandomAffine(
                degrees=affine.max_angle, translate=shift if any(shift) else None, shear=affine.max_shear, p=1.0
            )
        )
    if aug.use_random_color:
        color = aug.random_color
        steps.append(
            augment.ColorJiggle(
                brightness=color.brightness,
                contrast=color.contrast,
                # Saturation and hue are for RGB only, as in ChannelAwareColorJitter.
                saturation=color.saturation if rgb else 0.0,
                hue=color.hue if rgb else 0.0,
                p=color.p_apply,
            )
        )
    if aug.use_gamma_transform:
        steps.append(augment.RandomGamma(gamma=aug.gamma.scale, p=1.0))
    if aug.use_gaussian_blur:
        blur = aug.gaussian_blur
        kernel = RandomGaussianBlur(blur).kernel_size(size, size)
        steps.append(augment.RandomGaussianBlur((kernel, kernel), sigma=blur.sigma, p=blur.p_apply))
    if aug.use_solarize:
        steps.append(augment.RandomSolarize(thresholds=0.0, additions=0.0, p=aug.solarize.p_apply))
    if aug.use_elastic_transform:
        elastic = aug.elastic_transform
        kernel = elastic_kernel_size(elastic.sigma)
        # kornia's alpha scales the smoothed noise in normalised coordinates (2 / size per pixel).
        alpha = 2.0 * elastic.alpha / size
        steps.append(
            augment.RandomElasticTransform(
                kernel_size=(kernel, kernel),
                sigma=(elastic.sigma, elastic.sigma),
                alpha=(alpha, alpha),
                p=elastic.p_apply,
            )
        )
    if aug.use_gaussian_noise:
        noise = aug.gaussian_noise
        steps.append(augment.RandomGaussianNoise(std=noise.std, p=noise.p_apply))
    if aug.use_random_erasing:
        erasing = aug.random_erasing
        steps.append(augment.RandomErasing(scale=erasing.scale, ratio=erasing.ratio, value=0.0, p=erasing.p_apply))
    return _KorniaPipeline(config, torch.nn.Sequential(*steps), in_channels)


if __name__ == "__main__":
    main()
