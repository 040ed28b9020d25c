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


def test_lesion_makes_images_brighter_inside_the_lungs():
    spec = DemoSpec(num_images=400, image_size=32)
    images, labels = generate_dataset(spec)
    mean_positive = images[labels == 1].astype(float).mean()
    mean_negative = images[labels == 0].astype(float).mean()
    assert mean_positive > mean_negative


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
