"""CIFAR through torchvision's real loader, on a tiny CIFAR-format folder the test writes itself."""

import os
import pickle

import numpy as np
import pytest
import torch

from innerssl.data.datasets.base import DatasetOptions
from innerssl.errors import UserError
from innerssl.registry import DATASETS


def write_tiny_cifar10(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n, name):
        data = rng.integers(0, 256, size=(n, 3 * 32 * 32), dtype=np.uint8)
        labels = [int(i % 10) for i in range(n)]
        with open(folder / name, "wb") as handle:
            pickle.dump({"data": data, "labels": labels}, handle)
        return data, labels

    first = batch(n_train, "data_batch_1")
    for index in range(2, 6):
        batch(0, f"data_batch_{index}")
    batch(n_test, "test_batch")
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": names}, handle)
    return first


def test_cifar10_loads_with_torchvision_without_download(tmp_path, monkeypatch):
    # torchvision checks file MD5s; the tiny files differ from the published ones, so skip that check only.
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    data, labels = write_tiny_cifar10(tmp_path)
    splits = DATASETS.get("CIFAR10")(tmp_path, DatasetOptions())
    assert len(splits.train) == 20 and len(splits.val) == 10
    assert splits.label_info.task == "multiclass" and len(splits.label_info.class_names) == 10
    image, label = splits.train[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    expected = torch.from_numpy(data[3].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.allclose(image, expected)
    assert label == labels[3]


def test_missing_cifar_folder_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--local_dataset, or add --download_datasets"):
        DATASETS.get("CIFAR10")(tmp_path, DatasetOptions())


def test_cifar_cache_fingerprint_names_the_split_and_follows_its_files(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    write_tiny_cifar10(tmp_path)
    splits = DATASETS.get("CIFAR10")(tmp_path, DatasetOptions())
    train, test = splits.train.cache_fingerprint(), splits.test.cache_fingerprint()
    assert train["source"] == "CIFAR10" and train["train"] is True and test["train"] is False
    assert [name.rsplit("/", 1)[-1] for name, *_ in test["batch_files"]] == ["test_batch"]
    assert len(train["batch_files"]) == 5 and train != test
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    stats = batch.stat()
    os.utime(batch, ns=(stats.st_atime_ns, stats.st_mtime_ns + 1_000_000_000))
    assert splits.train.cache_fingerprint() != train and splits.test.cache_fingerprint() == test
