"""The decode-once image cache: keys and invalidation, bad files, exact pixels, workers, locking, subsets."""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset, default_collate
from torchvision.transforms import v2

from innerssl.augment.per_sample import ToChannels
from innerssl.data.cache import (
    COMPLETE_MARKER,
    CachedImageDataset,
    CacheSettings,
    FixedSizeDataset,
    cache_key,
    cached_dataset,
    fit_image,
    to_storage,
)
from innerssl.data.datasets.base import (
    BadFileLog,
    DatasetOptions,
    ImageFileDataset,
    ImageRecord,
    LabeledSubset,
    LabelInfo,
    image_to_tensor,
    label_to_python,
    read_bad_file_log,
)
from innerssl.data.datasets.demo import ArrayImageDataset, DemoSpec, load_or_generate
from innerssl.data.image_io import read_image
from innerssl.errors import BadImageFile, UserError
from innerssl.registry import DATASETS
from tests.data.datasets.test_cifar import write_tiny_cifar10

HEIGHT, WIDTH = 40, 50
NUM_IMAGES = 12
SLOT = 32
BINARY = LabelInfo("binary", ("negative", "positive"))


# --- helpers -----------------------------------------------------------------------------------------------


def counting_read(path: Path, counter: Path, delay: float = 0.0) -> np.ndarray:
    """read_image that appends one line per call to ``counter`` (works across processes)."""
    with open(counter, "a", encoding="utf-8") as handle:
        handle.write(f"{path}\n")
    if delay:
        time.sleep(delay)
    return read_image(path)


def decodes(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.is_file() else 0


def write_png(path: Path, seed: int, rgb: bool = False, shape: tuple[int, int] = (HEIGHT, WIDTH)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3) if rgb else shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_images(folder: Path, count: int = NUM_IMAGES, rgb_from: int | None = None) -> list[ImageRecord]:
    """``count`` random PNGs (gray; RGB from index ``rgb_from`` on), labels alternating 0 / 1."""
    records = []
    for index in range(count):
        rgb = rgb_from is not None and index >= rgb_from
        records.append(ImageRecord(write_png(folder / f"image_{index:02d}.png", index, rgb), index % 2))
    return records


def file_dataset(records: list[ImageRecord], log_path: Path, counter: Path | None = None) -> ImageFileDataset:
    reader = functools.partial(counting_read, counter=counter) if counter else functools.partial(read_image)
    return ImageFileDataset(records, BINARY, reader, BadFileLog(log_path))


def expected_slot(path: Path, size: int, fit: str, dtype: str, channels: int | None = None) -> torch.Tensor:
    """Direct decode + fit_image (+ channel conversion) + to_storage: what the cache must hold."""
    image = fit_image(image_to_tensor(read_image(path)), size, fit)
    if channels is not None:
        image = ToChannels(channels)(image)
    return to_storage(image, dtype)


def complete_caches(root: Path) -> list[Path]:
    return sorted(folder for folder in root.iterdir() if (folder / COMPLETE_MARKER).is_file())


@pytest.fixture
def records(tmp_path: Path) -> list[ImageRecord]:
    return write_images(tmp_path / "images")


# --- keys and invalidation ------------------------------------------------------------------------------------


def test_same_inputs_reuse_the_cache_without_decoding(tmp_path, records):
    counter = tmp_path / "decodes.txt"
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, channels=1)  # nothing left to resolve
    first = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings, "train")
    assert decodes(counter) == NUM_IMAGES
    again = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings, "train")
    assert decodes(counter) == NUM_IMAGES  # nothing decoded: the existing cache was opened
    assert again.folder == first.folder and complete_caches(settings.root) == [first.folder]
    assert len(again) == NUM_IMAGES and again.labels == [record.label for record in records]


def test_unset_size_and_channels_are_resolved_before_the_key(tmp_path, records):
    counter = tmp_path / "decodes.txt"
    settings = CacheSettings(tmp_path / "cache")  # image_size, channels: from the first readable image
    cached = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings)
    assert (cached.image_size, cached.channels) == (min(HEIGHT, WIDTH), 1)
    built = decodes(counter)
    again = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings)
    assert decodes(counter) == built + 1  # only the first image, to resolve the settings; no rebuild
    explicit = CacheSettings(tmp_path / "cache", image_size=min(HEIGHT, WIDTH), channels=1)
    same = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), explicit)
    assert again.folder == cached.folder == same.folder  # the key holds the resolved values


def test_touching_relabelling_or_changing_the_file_list_rebuilds(tmp_path, records):
    counter = tmp_path / "decodes.txt"
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, channels=1)
    base = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings).folder

    stats = records[4].path.stat()
    os.utime(records[4].path, ns=(stats.st_atime_ns, stats.st_mtime_ns + 1_000_000_000))
    touched = cached_dataset(file_dataset(records, tmp_path / "bad.txt", counter), settings).folder
    assert touched != base and decodes(counter) == 2 * NUM_IMAGES

    relabelled = [ImageRecord(records[0].path, 1 - records[0].label), *records[1:]]
    assert cached_dataset(file_dataset(relabelled, tmp_path / "bad.txt"), settings).folder not in (base, touched)

    fewer = cached_dataset(file_dataset(records[:-1], tmp_path / "bad.txt"), settings)
    assert fewer.folder not in (base, touched) and len(fewer) == NUM_IMAGES - 1


def test_every_setting_that_changes_pixels_changes_the_key(tmp_path, records):
    dataset = file_dataset(records, tmp_path / "bad.txt")
    root = tmp_path / "cache"
    variants = [
        CacheSettings(root, image_size=SLOT),
        CacheSettings(root, image_size=SLOT + 2),
        CacheSettings(root, image_size=SLOT, fit="pad"),
        CacheSettings(root, image_size=SLOT, dtype="uint16"),
        CacheSettings(root, image_size=SLOT, channels=3),
    ]
    folders = {cached_dataset(dataset, settings).folder for settings in variants}
    assert len(folders) == len(variants)
    # The number of decoding workers does not change the pixels, so not the key either.
    assert cached_dataset(dataset, CacheSettings(root, image_size=SLOT, num_workers=2)).folder in folders
    fingerprint = dataset.cache_fingerprint()
    assert cache_key(fingerprint, variants[0]) == cache_key(fingerprint, CacheSettings(tmp_path / "other", SLOT))


def test_reader_settings_are_part_of_the_fingerprint(tmp_path, records):
    with_lut = ImageFileDataset(records, BINARY, functools.partial(read_image, apply_voi_lut=True))
    without_lut = ImageFileDataset(records, BINARY, functools.partial(read_image, apply_voi_lut=False))
    assert with_lut.cache_fingerprint()["reader"]["qualname"] == "read_image"
    assert with_lut.cache_fingerprint() != without_lut.cache_fingerprint()
    assert with_lut.cache_fingerprint() == ImageFileDataset(records, BINARY, with_lut.reader).cache_fingerprint()


# --- bad files ---------------------------------------------------------------------------------------------------


def test_bad_files_are_skipped_and_reported_at_build_and_on_every_open(tmp_path, records):
    records[3].path.write_bytes(b"not a png")
    missing = ImageRecord(tmp_path / "images" / "missing.png", 1)
    records = [*records, missing]
    counter = tmp_path / "decodes.txt"
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, channels=1)
    cached = cached_dataset(file_dataset(records, tmp_path / "run1" / "bad.txt", counter), settings, "train")
    assert cached.num_bad == 2 and len(cached) == NUM_IMAGES + 1
    first_log = read_bad_file_log(tmp_path / "run1" / "bad.txt")
    assert set(first_log) == {str(records[3].path), str(missing.path)}
    assert "cannot be decoded" in first_log[str(records[3].path)] and "not found" in first_log[str(missing.path)]

    # A later run opens the cache without decoding and still lists the bad files in its own log.
    built = decodes(counter)
    reopened = cached_dataset(file_dataset(records, tmp_path / "run2" / "bad.txt", counter), settings, "train")
    assert decodes(counter) == built and reopened.folder == cached.folder
    assert read_bad_file_log(tmp_path / "run2" / "bad.txt") == first_log

    assert reopened[3] is None and reopened[NUM_IMAGES] is None and reopened[2] is not None
    batch = reopened.__getitems__([2, 3, NUM_IMAGES, 5])
    assert len(batch) == 4
    assert torch.equal(batch[1][0], reopened[4][0]) and batch[1][1] == records[4].label  # next decodable
    assert torch.equal(batch[2][0], reopened[0][0]) and batch[2][1] == records[0].label  # wraps around
    assert torch.equal(batch[0][0], reopened[2][0]) and torch.equal(batch[3][0], reopened[5][0])


def test_image_file_dataset_decode_raises_with_the_reason(tmp_path, records):
    records[0].path.write_bytes(b"broken")
    dataset = file_dataset(records, tmp_path / "bad.txt")
    with pytest.raises(BadImageFile, match="cannot be decoded"):
        dataset.decode(0)
    assert dataset[0] is None and str(records[0].path) in read_bad_file_log(tmp_path / "bad.txt")
    image, label = dataset.decode(1)
    assert image.shape == (1, HEIGHT, WIDTH) and label == records[1].label


def test_a_dataset_of_only_bad_files_is_a_user_error(tmp_path, records):
    for record in records:
        record.path.write_bytes(b"broken")
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, channels=1)  # nothing to resolve: a build
    with pytest.raises(UserError, match="None of the 12 images of Broken train"):
        cached_dataset(file_dataset(records, tmp_path / "bad.txt"), settings, "Broken train")
    assert complete_caches(settings.root) == []
    assert [path for path in settings.root.iterdir() if path.is_dir()] == []  # no temporary folder left
    assert len(read_bad_file_log(tmp_path / "bad.txt")) == NUM_IMAGES
    with pytest.raises(UserError, match="No image of Broken train"):  # size from the first image: none decodes
        cached_dataset(file_dataset(records, tmp_path / "bad.txt"), CacheSettings(tmp_path / "cache"), "Broken train")


def failing_read(path: Path, fail_on: str) -> np.ndarray:
    if path.name == fail_on:
        raise RuntimeError("simulated crash during the build")
    return read_image(path)


def test_a_crashed_build_leaves_no_cache_that_is_used_later(tmp_path, records):
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT)
    crashing = ImageFileDataset(records, BINARY, functools.partial(failing_read, fail_on=records[5].path.name))
    with pytest.raises(RuntimeError, match="simulated crash"):
        cached_dataset(crashing, settings)
    assert [path for path in settings.root.iterdir() if path.is_dir()] == []

    # A folder that was renamed into place but never marked complete is rebuilt, not used.
    dataset = file_dataset(records, tmp_path / "bad.txt")
    folder = cached_dataset(dataset, settings).folder
    (folder / COMPLETE_MARKER).unlink()
    np.save(folder / "images.npy", np.zeros((1,), np.uint8))  # what a half-written cache might hold
    rebuilt = cached_dataset(dataset, settings)
    assert rebuilt.folder == folder and (folder / COMPLETE_MARKER).is_file()
    assert torch.equal(rebuilt[1][0], expected_slot(records[1].path, SLOT, "crop", "uint8"))


def test_a_dataset_without_fingerprint_cannot_be_cached(tmp_path):
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return torch.zeros(1, 4, 4), 0

    with pytest.raises(UserError, match="--decode_cache=false"):
        cached_dataset(Plain(), CacheSettings(tmp_path / "cache", image_size=4), "plain")


def test_invalid_settings_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="fit 'stretch'"):
        CacheSettings(tmp_path, fit="stretch")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="dtype 'float32'"):
        CacheSettings(tmp_path, dtype="float32")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="image size 0"):
        CacheSettings(tmp_path, image_size=0)
    with pytest.raises(UserError, match="channels 2"):
        CacheSettings(tmp_path, channels=2)


# --- pixels ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["crop", "pad"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_cached_pixels_equal_a_direct_decode_exactly(tmp_path, records, fit, dtype):
    dataset = file_dataset(records, tmp_path / "bad.txt")
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, fit=fit, dtype=dtype, num_workers=1)
    cached = cached_dataset(dataset, settings)
    direct = FixedSizeDataset(dataset, SLOT, fit, dtype, 1)
    expected_type = torch.uint8 if dtype == "uint8" else torch.uint16
    for index, record in enumerate(records):
        image, label = cached[index]
        assert image.dtype == expected_type and image.shape == (1, SLOT, SLOT)
        assert torch.equal(image, expected_slot(record.path, SLOT, fit, dtype)), index
        assert torch.equal(direct[index][0], image) and direct[index][1] == label == record.label
    batch = cached.__getitems__([7, 0, 7])
    assert all(torch.equal(image, cached[i][0]) for (image, _), i in zip(batch, [7, 0, 7]))


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
def test_crop_matches_the_per_sample_preprocess_within_quantisation(tmp_path, records, dtype):
    cached = cached_dataset(
        file_dataset(records, tmp_path / "bad.txt"), CacheSettings(tmp_path / "cache", SLOT, dtype=dtype)
    )
    preprocess = v2.Compose([v2.Resize(SLOT, antialias=True), v2.CenterCrop(SLOT)])
    full_scale = 255.0 if dtype == "uint8" else 65535.0
    for index, record in enumerate(records):
        reference = preprocess(image_to_tensor(read_image(record.path)))
        stored = cached[index][0].to(torch.float32) / full_scale
        assert (stored - reference).abs().max() <= 0.5 / full_scale + 1e-6


def test_fit_without_resampling_when_a_side_already_has_the_size():
    image = torch.rand(1, HEIGHT, WIDTH)
    cropped = fit_image(image, HEIGHT, "crop")  # shorter side already HEIGHT: only the center crop
    offset = (WIDTH - HEIGHT) // 2
    assert torch.equal(cropped, image[:, :, offset : offset + HEIGHT])
    padded = fit_image(image, WIDTH, "pad")  # longer side already WIDTH: only zero padding
    top = (WIDTH - HEIGHT) // 2
    assert padded.shape == (1, WIDTH, WIDTH)
    assert torch.equal(padded[:, top : top + HEIGHT], image)
    assert padded[:, :top].abs().sum() == 0 and padded[:, top + HEIGHT :].abs().sum() == 0
    shrunk = fit_image(image, 25, "pad")  # 40 x 50 -> 20 x 25, padded to 25 x 25; nothing cut
    assert shrunk.shape == (1, 25, 25) and shrunk[:, :2].abs().sum() == 0 and shrunk[:, 2:22].abs().sum() > 0


def test_to_storage_rounds_to_the_full_integer_range():
    image = torch.tensor([[[0.0, 1.0, 0.5, -0.2, 1.3, 0.5 / 255 + 1e-4]]])
    assert to_storage(image, "uint8").tolist() == [[[0, 255, 128, 0, 255, 1]]]
    assert to_storage(image, "uint16").to(torch.int32).tolist()[0][0][:5] == [0, 65535, 32768, 0, 65535]


def test_gray_and_rgb_images_are_converted_to_the_first_images_channels(tmp_path):
    records = write_images(tmp_path / "images", count=6, rgb_from=3)
    dataset = file_dataset(records, tmp_path / "bad.txt")
    gray = cached_dataset(dataset, CacheSettings(tmp_path / "cache", image_size=SLOT))
    assert gray.channels == 1
    for index, record in enumerate(records):
        assert torch.equal(gray[index][0], expected_slot(record.path, SLOT, "crop", "uint8", channels=1))
    rgb = cached_dataset(dataset, CacheSettings(tmp_path / "cache", image_size=SLOT, channels=3))
    assert rgb.channels == 3 and rgb[0][0].shape == (3, SLOT, SLOT)
    assert torch.equal(rgb[0][0], gray[0][0].expand(3, -1, -1))  # gray repeated into three channels
    assert torch.equal(rgb[4][0], expected_slot(records[4].path, SLOT, "crop", "uint8"))
    assert not torch.equal(rgb[4][0][0], rgb[4][0][1])  # real colour kept


def test_multilabel_labels_come_back_as_float_tensors(tmp_path):
    paths = [write_png(tmp_path / "images" / f"{index}.png", index) for index in range(3)]
    labels = [(1.0, 0.0), (math.nan, 1.0), (0.0, 0.0)]
    records = [ImageRecord(path, label) for path, label in zip(paths, labels)]
    dataset = ImageFileDataset(records, LabelInfo("multilabel", ("a", "b")), functools.partial(read_image))
    cached = cached_dataset(dataset, CacheSettings(tmp_path / "cache", image_size=SLOT))
    assert cached.labels[0] == (1.0, 0.0) and cached.labels[2] == (0.0, 0.0)
    assert math.isnan(cached.labels[1][0]) and cached.labels[1][1] == 1.0
    for index, label in enumerate(labels):
        got = cached[index][1]
        assert got.dtype == torch.float32 and torch.equal(got.isnan(), label_to_python(label).isnan())
        assert torch.equal(got.nan_to_num(-1), label_to_python(label).nan_to_num(-1))
    assert torch.equal(cached.__getitems__([1])[0][1].nan_to_num(-1), torch.tensor([-1.0, 1.0]))


# --- processes ---------------------------------------------------------------------------------------------------


def test_a_dataloader_with_two_workers_yields_the_direct_batches(tmp_path, records):
    dataset = file_dataset(records, tmp_path / "bad.txt")
    cached = cached_dataset(dataset, CacheSettings(tmp_path / "cache", image_size=SLOT))
    cached[0]  # the memory map is open in this process now ...
    state = pickle.loads(pickle.dumps(cached))
    assert state._images is None and len(pickle.dumps(cached)) < SLOT * SLOT * NUM_IMAGES  # ... but not pickled
    loader = DataLoader(cached, batch_size=5, num_workers=2)
    direct = FixedSizeDataset(dataset, SLOT, "crop", "uint8", 1)
    expected = [default_collate([direct[i] for i in range(start, min(start + 5, NUM_IMAGES))]) for start in (0, 5, 10)]
    batches = list(loader)
    assert len(batches) == len(expected)
    for (images, labels), (expected_images, expected_labels) in zip(batches, expected):
        assert images.dtype == torch.uint8 and torch.equal(images, expected_images)
        assert torch.equal(labels, expected_labels)


def build_in_process(records: list[ImageRecord], root: Path, counter: Path, results: multiprocessing.Queue) -> None:
    reader = functools.partial(counting_read, counter=counter, delay=0.05)  # slow enough for both to overlap
    dataset = ImageFileDataset(records, BINARY, reader)
    results.put(str(cached_dataset(dataset, CacheSettings(root, image_size=SLOT, channels=1)).folder))


def test_two_processes_building_the_same_cache_build_it_once(tmp_path, records):
    context = multiprocessing.get_context("fork")
    counter, root = tmp_path / "decodes.txt", tmp_path / "cache"
    results = context.Queue()
    processes = [context.Process(target=build_in_process, args=(records, root, counter, results)) for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    folders = [results.get(timeout=5) for _ in processes]
    assert folders[0] == folders[1] and complete_caches(root) == [Path(folders[0])]
    assert decodes(counter) == NUM_IMAGES  # one build; the other process waited and opened it


# --- subsets and other datasets ------------------------------------------------------------------------------------


def test_subsets_cache_their_parent_and_share_its_cache(tmp_path, records):
    counter = tmp_path / "decodes.txt"
    dataset = file_dataset(records, tmp_path / "bad.txt", counter)
    settings = CacheSettings(tmp_path / "cache", image_size=SLOT, channels=1)
    indices = [3, 1, 7]
    labeled = cached_dataset(LabeledSubset(dataset, indices), settings)
    assert isinstance(labeled, LabeledSubset) and isinstance(labeled.dataset, CachedImageDataset)
    assert len(labeled.dataset) == NUM_IMAGES and list(labeled.indices) == indices
    assert labeled.labels == [records[i].label for i in indices]
    assert [record.path for record in labeled.records] == [records[i].path for i in indices]
    assert torch.equal(labeled[0][0], expected_slot(records[3].path, SLOT, "crop", "uint8"))
    batch = labeled.__getitems__([0, 2])  # torch's Subset forwards batched reads to the cache
    assert torch.equal(batch[1][0], labeled.dataset[7][0])

    plain = cached_dataset(Subset(dataset, [0, 5]), settings)
    full = cached_dataset(dataset, settings)
    assert type(plain) is Subset and plain.dataset.folder == labeled.dataset.folder == full.folder
    assert decodes(counter) == NUM_IMAGES  # one build for the parent, shared by both subsets


def test_demo_arrays_are_cached_exactly(tmp_path):
    images, labels = load_or_generate(tmp_path / "demo", DemoSpec(num_images=12, image_size=16))
    train = ArrayImageDataset(images, labels, np.arange(0, 8))
    cached = cached_dataset(train, CacheSettings(tmp_path / "cache"))
    assert (cached.image_size, cached.channels, len(cached)) == (16, 1, 8)
    assert np.array_equal(np.stack([cached[i][0][0].numpy() for i in range(8)]), np.asarray(images[:8]))
    assert cached.labels == labels[:8].tolist() and cached.records is None
    val = cached_dataset(ArrayImageDataset(images, labels, np.arange(8, 12)), CacheSettings(tmp_path / "cache"))
    assert val.folder != cached.folder and np.array_equal(val[0][0][0].numpy(), images[8])


def test_cifar_is_cached_exactly(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)
    data, labels = write_tiny_cifar10(tmp_path / "cifar")
    splits = DATASETS.get("CIFAR10")(tmp_path / "cifar", DatasetOptions())
    cached = cached_dataset(splits.train, CacheSettings(tmp_path / "cache"), "CIFAR10 train")
    assert (cached.image_size, cached.channels, len(cached)) == (32, 3, len(labels))
    for index in (0, 7):
        assert np.array_equal(cached[index][0].numpy(), data[index].reshape(3, 32, 32))
        assert cached[index][1] == labels[index]
    test_cache = cached_dataset(splits.test, CacheSettings(tmp_path / "cache"), "CIFAR10 test")
    assert test_cache.folder != cached.folder


# --- real data -------------------------------------------------------------------------------------------------------


def test_real_nih_images_match_a_direct_decode(shared_data, tmp_path):
    paths = sorted((shared_data / "nih-sample" / "images").glob("*.png"))[:4]
    if not paths:
        pytest.skip("no NIH sample images in the shared data")
    dataset = ImageFileDataset([ImageRecord(path) for path in paths], BINARY, functools.partial(read_image))
    settings = CacheSettings(tmp_path / "cache", image_size=64, num_workers=2)
    cached = cached_dataset(dataset, settings, "NIH sample")
    assert cached.num_bad == 0 and cached.channels == 1
    index = json.loads((cached.folder / "index.json").read_text())
    for position, path in enumerate(paths):
        image = read_image(path)
        assert (index["heights"][position], index["widths"][position]) == image.shape[:2]
        expected = to_storage(fit_image(image_to_tensor(image), 64, "crop"), "uint8")
        assert torch.equal(cached[position][0], expected)
        assert cached[position][0].float().std() > 10  # a real radiograph, not an empty slot
