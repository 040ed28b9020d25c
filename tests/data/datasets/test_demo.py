import os

import numpy as np
import torch

from innerssl.data.datasets.base import DatasetOptions
from innerssl.data.datasets.demo import ArrayImageDataset, DemoSpec, build_demo, generate_dataset, load_or_generate


def test_generation_is_deterministic_and_labels_are_balanced():
    spec = DemoSpec(num_images=40, image_size=32)
    images, labels = generate_dataset(spec)
    again, labels_again = generate_dataset(spec)
    assert images.dtype == np.uint8 and images.shape == (40, 32, 32)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert 10 <= labels.sum() <= 30
    other, _ = generate_dataset(DemoSpec(num_images=40, image_size=32, seed=7))
    assert not np.array_equal(images, other)


def _separation(values: np.ndarray, labels: np.ndarray) -> float:
    """Difference of the class means (positive - negative) in standard errors."""
    positive, negative = values[labels == 1], values[labels == 0]
    standard_error = np.sqrt(positive.var() / len(positive) + negative.var() / len(negative))
    return (positive.mean() - negative.mean()) / standard_error


def test_reticular_opacity_is_fine_texture_without_net_brightness():
    images, labels = generate_dataset(DemoSpec(num_images=400))  # the demo's 64 px
    pixels = torch.from_numpy(images.astype(np.float32) / 255)[:, None]
    # A band-pass at the texture's period (4 px): finer than the anatomy, coarser than most of the noise.
    band = torch.nn.functional.avg_pool2d(pixels, 3, 1, 1, count_include_pad=False) - torch.nn.functional.avg_pool2d(
        pixels, 7, 1, 3, count_include_pad=False
    )
    peak_band_energy = band.square().amax((1, 2, 3)).numpy()
    assert _separation(peak_band_energy, labels) > 6
    # No bright spot: the label does not shift the mean brightness beyond chance.
    assert abs(_separation(pixels.mean((1, 2, 3)).numpy(), labels)) < 3


def test_cache_is_written_once_and_reused(tmp_path):
    spec = DemoSpec(num_images=12, image_size=16)
    images, labels = load_or_generate(tmp_path, spec)
    folder = tmp_path / spec.folder_name
    mtime = (folder / "images.npy").stat().st_mtime_ns
    images2, _ = load_or_generate(tmp_path, spec)
    assert (folder / "images.npy").stat().st_mtime_ns == mtime
    assert np.array_equal(np.asarray(images), np.asarray(images2))


def test_builder_splits_and_items(tmp_path):
    options = DatasetOptions(seed=3, val_fraction=0.2, test_fraction=0.1, demo={"num_images": 50, "image_size": 16})
    splits = build_demo(tmp_path, options)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 50
    assert len(splits.val) == 10 and len(splits.test) == 5
    image, label = splits.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 16, 16)
    assert 0 <= image.min() and image.max() <= 1 and label in (0, 1)
    assert set(splits.train.indices) & set(splits.val.indices) == set()


def test_cache_fingerprint_follows_the_file_the_indices_and_the_content(tmp_path):
    images, labels = load_or_generate(tmp_path, DemoSpec(num_images=12, image_size=16))
    first = ArrayImageDataset(images, labels, np.arange(6)).cache_fingerprint()
    assert first == ArrayImageDataset(images, labels, np.arange(6)).cache_fingerprint()
    assert first["source"]["file"].endswith("images.npy")
    assert first != ArrayImageDataset(images, labels, np.arange(1, 7)).cache_fingerprint()
    images_file = tmp_path / DemoSpec(num_images=12, image_size=16).folder_name / "images.npy"
    stats = images_file.stat()
    os.utime(images_file, ns=(stats.st_atime_ns, stats.st_mtime_ns + 1_000_000_000))
    assert first != ArrayImageDataset(images, labels, np.arange(6)).cache_fingerprint()

    in_memory = np.array(images)  # not a memmap: identified by a hash of its pixels
    hashed = ArrayImageDataset(in_memory, labels, np.arange(6)).cache_fingerprint()
    in_memory[0, 0, 0] ^= 1
    assert "sha256" in hashed["source"]
    assert hashed != ArrayImageDataset(in_memory, labels, np.arange(6)).cache_fingerprint()
