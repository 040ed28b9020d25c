"""The embedded demo dataset: procedurally generated chest-radiograph-like images, no download needed.

Each image is a grayscale frontal "chest" (body outline, two dark lung fields, a bright mediastinum,
faint ribs, quantum-like noise) with random anatomy, pose and exposure. Half of the images carry a
reticular opacity inside one lung: a patch of fine criss-cross texture (three plane waves of random
orientation, a few pixels in period, under a soft round envelope of random size and amplitude). That is
the binary label. The texture has no net brightness, so the label is not a bright spot that a linear model
of the pixels (or a randomly initialised network, which is close to one) picks up: an encoder has to learn
features that respond to fine texture. Generation is deterministic in the seed and written once into a
cache folder as a uint8 array, so the demo configs run out of the box on a laptop CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, LabelInfo, file_stats, report_splits
from innerssl.data.splits import split_by_group
from innerssl.registry import DATASETS

logger = logging.getLogger(__name__)

FORMAT_VERSION = 3
LABEL_INFO = LabelInfo("binary", ("No opacity", "Opacity"))


@dataclass(frozen=True)
class DemoSpec:
    """What defines the generated images; a change of any field generates a new cache folder."""

    num_images: int = 1600
    image_size: int = 64
    positive_fraction: float = 0.5
    lesion_radius_range: tuple[float, float] = (0.06, 0.12)
    """Radius (standard deviation of the envelope) of the reticular patch as a fraction of the image size."""
    lesion_contrast_range: tuple[float, float] = (0.35, 0.65)
    """Peak amplitude of the patch's texture (intensities are in [0, 1])."""
    lesion_period_px: float = 4.0
    """Period of the texture's plane waves in pixels."""
    noise_std: float = 0.04
    seed: int = 1234

    @property
    def folder_name(self) -> str:
        return f"demo_radiographs_v{FORMAT_VERSION}_n{self.num_images}_px{self.image_size}_seed{self.seed}"


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(coords, coords, indexing="xy")


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, edge: float) -> np.ndarray:
    """Soft-edged filled ellipse in [0, 1]."""
    distance = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return 1 / (1 + np.exp((distance - 1) / edge))


def reticular_texture(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, period: float) -> np.ndarray:
    """Zero-mean criss-cross texture in [-1, 1]: the mean of three plane waves of random orientation and phase."""
    texture = np.zeros_like(x)
    for _ in range(3):
        angle, phase = rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        texture += np.cos(2 * np.pi / period * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    return texture / 3


def generate_image(rng: np.random.Generator, spec: DemoSpec, with_lesion: bool) -> np.ndarray:
    """One radiograph-like image as float32 (H, W) in [0, 1]."""
    x, y = _grid(spec.image_size)
    shift_x, shift_y = rng.uniform(-0.08, 0.08, size=2)
    scale = rng.uniform(0.9, 1.1)
    xs, ys = (x - shift_x) / scale, (y - shift_y) / scale

    body = _ellipse(xs, ys, 0, 0.1, rng.uniform(0.8, 0.95), rng.uniform(1.0, 1.2), 0.05)
    lung_width, lung_height = rng.uniform(0.26, 0.34), rng.uniform(0.5, 0.62)
    lung_centers = [(-0.38 + rng.normal(0, 0.02), -0.05), (0.38 + rng.normal(0, 0.02), -0.05)]
    lungs = sum(_ellipse(xs, ys, cx, cy, lung_width, lung_height, 0.08) for cx, cy in lung_centers)
    mediastinum = _ellipse(xs, ys, 0.02, 0.15, rng.uniform(0.14, 0.2), 0.8, 0.1)
    ribs = 0.5 + 0.5 * np.sin((ys + 0.3 * xs**2) * rng.uniform(16, 20) + rng.uniform(0, 2 * np.pi))

    image = 0.08 + 0.55 * body - 0.32 * lungs * body + 0.25 * mediastinum * body
    image += 0.06 * ribs * lungs * body
    if with_lesion:
        cx, cy = lung_centers[rng.integers(2)]
        cx += rng.uniform(-0.5, 0.5) * lung_width
        cy += rng.uniform(-0.6, 0.6) * lung_height
        radius = rng.uniform(*spec.lesion_radius_range) * 2
        contrast = rng.uniform(*spec.lesion_contrast_range)
        envelope = np.exp(-(((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * radius**2)))
        image += contrast * envelope * reticular_texture(rng, xs, ys, spec.lesion_period_px * 2 / spec.image_size)
    exposure, gamma = rng.uniform(0.85, 1.15), rng.uniform(0.8, 1.25)
    image = np.clip(image * exposure, 0, 1) ** gamma
    image += rng.normal(0, spec.noise_std, size=image.shape)
    return np.clip(image, 0, 1).astype(np.float32)


def generate_dataset(spec: DemoSpec) -> tuple[np.ndarray, np.ndarray]:
    """All images as uint8 (N, H, W) and their labels, deterministic in ``spec.seed``."""
    rng = np.random.default_rng(spec.seed)
    labels = (rng.random(spec.num_images) < spec.positive_fraction).astype(np.int64)
    images = np.empty((spec.num_images, spec.image_size, spec.image_size), dtype=np.uint8)
    for index, label in enumerate(labels):
        images[index] = np.round(generate_image(rng, spec, bool(label)) * 255).astype(np.uint8)
    return images, labels


def load_or_generate(cache_dir: Path, spec: DemoSpec) -> tuple[np.ndarray, np.ndarray]:
    """Read the generated dataset from ``cache_dir``, generating it there on first use."""
    folder = cache_dir / spec.folder_name
    images_file, labels_file = folder / "images.npy", folder / "labels.npy"
    if not (images_file.is_file() and labels_file.is_file()):
        logger.info("Generating the demo dataset (%d images) into %s", spec.num_images, folder)
        images, labels = generate_dataset(spec)
        folder.mkdir(parents=True, exist_ok=True)
        # Write to temporary names and rename, so concurrent processes never read half a file.
        for target, array in ((images_file, images), (labels_file, labels)):
            temporary = target.with_suffix(f".tmp{np.random.default_rng().integers(1 << 30)}.npy")
            np.save(temporary, array)
            temporary.replace(target)
        (folder / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
    return np.load(images_file, mmap_mode="r"), np.load(labels_file)


class ArrayImageDataset(Dataset):
    """Images held in a uint8 array (N, H, W), returned as float32 (1, H, W) tensors in [0, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
        self.images = images
        self.indices = np.asarray(indices)
        self.label_array = np.asarray(labels)[self.indices]
        filename = getattr(images, "filename", None)  # set when the array is a memmap of a .npy file
        self.source_file = Path(filename) if filename else None

    def cache_fingerprint(self) -> dict[str, Any]:
        """What the items depend on, for the decode cache's key: the array's file (or its content) and indices.

        A memory-mapped array is identified by its file's path, size and modification time; an array held in
        memory by a hash of its bytes. The labels are part of it, so relabelled data gets a new key.
        """
        if self.source_file is not None:
            source: dict[str, Any] = {"file": str(self.source_file), "stats": file_stats(self.source_file)}
        else:
            array = np.ascontiguousarray(self.images)
            source = {"sha256": hashlib.sha256(array.tobytes()).hexdigest(), "shape": list(array.shape)}
        return {
            "type": type(self).__qualname__,
            "source": source,
            "indices": self.indices.tolist(),
            "labels": self.label_array.tolist(),
        }

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> list[int]:
        return self.label_array.tolist()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = torch.from_numpy(np.array(self.images[self.indices[index]], dtype=np.float32) / 255)
        return pixels[None], int(self.label_array[index])


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "innerssl"


@DATASETS.register("Demo")
def build_demo(root: Path | None, options: DatasetOptions) -> DatasetSplits:
    """The embedded demo dataset; ``root`` (if given) is where it is generated and cached."""
    cache_dir = root or options.cache_dir or default_cache_dir()
    spec = DemoSpec(**options.demo)
    images, labels = load_or_generate(Path(cache_dir), spec)
    # Each generated image is its own "patient"; the split seed is the container's, not the generator's.
    train, val, test = split_by_group(
        [str(i) for i in range(len(labels))], options.val_fraction, options.test_fraction, options.seed
    )
    splits = DatasetSplits(
        train=ArrayImageDataset(images, labels, train),
        val=ArrayImageDataset(images, labels, val),
        test=ArrayImageDataset(images, labels, test),
        label_info=LABEL_INFO,
    )
    logger.info(report_splits("Demo", splits))
    return splits
