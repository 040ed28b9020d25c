"""Storage and augmentation streams of the data pipeline, and the datamodules that apply them on the device."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.utils.data import Dataset

from innerssl.augment.config import parse_augmentation_config
from innerssl.augment.views import ViewGroup
from innerssl.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.cache import CacheSettings, FixedSizeDataset
from innerssl.data.datamodule import ClassifierDataModule, SSLDataModule, make_loader
from innerssl.data.datasets.base import DatasetSplits, LabelInfo
from innerssl.data.pipeline import ImageStorage, ImageStream, TransformedDataset, stream_seed
from innerssl.runner import main
from tests.conftest import tiny_demo_flags

BINARY = LabelInfo("binary", ("no", "yes"))
VIEWS = parse_augmentation_config(
    {
        "preprocess": {"resize": 24, "center_crop_size": 20},
        "augmentation": {
            "use_random_crop": True,
            "use_random_horizontal_flip": True,
            "use_gaussian_noise": True,
            "random_crop": {"scale": [0.5, 1.0]},
            "gaussian_noise": {"std": 0.05, "p_apply": 1.0},
        },
    },
    "test views",
)
MULTI_CROP = (ViewGroup(2, crop_scale=(0.4, 1.0)), ViewGroup(3, size=0.5, crop_scale=(0.05, 0.4), role="local"))
"""Two 20 px global views and three 10 px local crops of the test config."""
MULTI_CROP_SHAPES = [(20, 20)] * 2 + [(10, 10)] * 3


class FloatImages(Dataset):
    """Float (1, 30, 40) images in [0, 1] as datasets return them; item 2 cannot be decoded (None)."""

    def __init__(self, count: int = 6, bad: tuple[int, ...] = (2,)) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(count, 1, 30, 40, generator=generator)
        self.labels = [i % 2 for i in range(count)]
        self.bad = bad
        self.reads: list[int] = []

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        self.reads.append(index)
        if index in self.bad:
            return None
        return self.images[index], self.labels[index]

    def cache_fingerprint(self) -> dict:
        return {"kind": "test", "count": len(self), "bad": list(self.bad)}


def storage(tmp_path, decode_cache: bool, fixed_size: bool = True, image_size: int | None = 24) -> ImageStorage:
    settings = CacheSettings(root=tmp_path / "decoded", image_size=image_size)
    return ImageStorage(settings, decode_cache=decode_cache, fixed_size=fixed_size)


def test_storage_without_cache_fits_images_to_fixed_size_integer_slots(tmp_path):
    source = FloatImages()
    stored = storage(tmp_path, decode_cache=False).store(source, "test")
    assert isinstance(stored, FixedSizeDataset)
    image, label = stored[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 24, 24) and label == 0
    assert stored[2] is None
    assert not (tmp_path / "decoded").exists()  # nothing written without the cache
    # Per-sample augmentation keeps the datasets' own float images.
    assert storage(tmp_path, decode_cache=False, fixed_size=False).store(source, "test") is source


def test_storage_without_cache_learns_the_size_from_the_first_readable_image(tmp_path):
    source = FloatImages(bad=(0,))
    stored = storage(tmp_path, decode_cache=False, image_size=None).store(source, "test")
    assert stored[1][0].shape == (1, 30, 30)  # the shorter side of the 30 x 40 images


def test_storage_with_cache_decodes_once_and_reads_whole_batches(tmp_path):
    source = FloatImages()
    stored = storage(tmp_path, decode_cache=True).store(source, "test")
    reads = len(source.reads)
    batch = stored.__getitems__([0, 1, 2, 3])
    assert len(source.reads) == reads  # training reads come from the cache, not the dataset
    assert [label for _, label in batch] == [0, 1, 1, 1]  # the bad item 2 is replaced by the next readable one
    assert all(image.dtype == torch.uint8 and image.shape == (1, 24, 24) for image, _ in batch)


def test_store_splits_stores_only_the_splits_a_run_uses(tmp_path):
    splits = DatasetSplits(train=FloatImages(), val=FloatImages(4), test=FloatImages(3), label_info=BINARY)
    stored = storage(tmp_path, decode_cache=False).store_splits(splits, "Test", ("train", "val"))
    assert isinstance(stored.train, FixedSizeDataset) and isinstance(stored.val, FixedSizeDataset)
    assert stored.test is splits.test and stored.label_info == BINARY
    assert stored.train.labels == splits.train.labels


def test_per_sample_stream_augments_in_the_loader_and_leaves_batches_alone(tmp_path):
    stream = ImageStream(VIEWS, in_channels=3, augment_on_device=False, views=2)
    assert not stream.on_device
    dataset = stream.loader_dataset(FloatImages())
    assert isinstance(dataset, TransformedDataset)
    (view0, view1), label = dataset[2]  # unreadable: replaced by item 3
    assert label == 1 and view0.shape == view1.shape == (3, 20, 20) and view0.dtype == torch.float32
    assert not torch.equal(view0, view1)
    batch = (torch.zeros(2, 1, 5, 5), torch.tensor([0, 1]))
    assert stream.apply(batch) is batch


def test_device_stream_reads_stored_integers_and_augments_whole_batches(tmp_path):
    stored = storage(tmp_path, decode_cache=True).store(FloatImages(), "test")
    stream = ImageStream(VIEWS, in_channels=3, augment_on_device=True, views=2)
    assert stream.on_device
    assert stream.loader_dataset(stored) is stored  # batched reads straight from the cache
    fitted = storage(tmp_path, decode_cache=False).store(FloatImages(), "test")
    assert isinstance(stream.loader_dataset(fitted), TransformedDataset)  # skips unreadable items one by one

    images = torch.stack([image for image, _ in stored.__getitems__([0, 1, 3, 4])])
    labels = torch.tensor([0, 1, 1, 0])
    (view0, view1), out_labels = stream.apply((images, labels))
    assert out_labels is labels
    assert view0.shape == view1.shape == (4, 3, 20, 20) and view0.dtype == view1.dtype == torch.float32
    assert 0 <= float(view0.min()) and float(view0.max()) <= 1
    assert not torch.equal(view0, view1)  # two independent draws


@pytest.mark.parametrize("on_device", [False, True], ids=["per_sample", "on_device"])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_stream_of_view_groups_gives_every_view_in_the_groups_order(tmp_path, on_device, channels):
    stream = ImageStream(VIEWS, in_channels=channels, augment_on_device=on_device, views=MULTI_CROP)
    assert stream.views == 5 and stream.view_groups == MULTI_CROP
    stored = storage(tmp_path, decode_cache=on_device, fixed_size=on_device).store(FloatImages(), "test")
    loader = make_loader(stream.loader_dataset(stored), batch_size=4, num_workers=0)
    views, labels = stream.apply(next(iter(loader)))
    assert len(views) == 5 and labels.shape == (4,)
    assert [tuple(view.shape[-2:]) for view in views] == MULTI_CROP_SHAPES
    assert all(view.shape[:2] == (4, channels) and view.dtype == torch.float32 for view in views)
    assert all(0 <= float(view.min()) and float(view.max()) <= 1 for view in views)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])


def test_a_single_view_group_still_gives_a_sequence_of_views():
    images = torch.randint(0, 256, (3, 1, 24, 24), dtype=torch.uint8)
    views = ImageStream(VIEWS, 1, True, views=[ViewGroup(1)]).to_encoder(images)
    assert isinstance(views, tuple) and len(views) == 1 and views[0].shape == (3, 1, 20, 20)
    assert isinstance(ImageStream(VIEWS, 1, True).to_encoder(images), torch.Tensor)  # a plain stream: images
    with pytest.raises(ValueError, match="views"):
        ImageStream(VIEWS, 1, True, views=0)
    with pytest.raises(ValueError, match="views"):
        ImageStream(VIEWS, 1, True, views=[])


def test_device_stream_is_reproducible_under_its_seed():
    images = torch.randint(0, 256, (4, 1, 24, 24), dtype=torch.uint8)
    first, second = (ImageStream(VIEWS, 1, augment_on_device=True) for _ in range(2))
    first.reseed(5)
    second.reseed(5)
    torch.testing.assert_close(first.to_encoder(images), second.to_encoder(images), rtol=0, atol=0)
    second.reseed(6)
    assert not torch.equal(first.to_encoder(images), second.to_encoder(images))


def test_stream_seeds_differ_per_process_and_stream_and_repeat_per_run():
    seeds = {stream_seed(42, rank, stream) for rank in range(4) for stream in range(3)}
    assert len(seeds) == 12
    assert stream_seed(42, 1, 2) == stream_seed(42, 1, 2) != stream_seed(43, 1, 2)


def with_trainer(datamodule, training: bool, rank: int = 0):
    datamodule.trainer = SimpleNamespace(training=training, global_rank=rank)
    datamodule.setup("fit")
    return datamodule


def test_ssl_datamodule_augments_each_loader_with_its_stream_after_the_transfer():
    eval_config = VIEWS.preprocess_only()
    datamodule = SSLDataModule(
        ssl_splits=DatasetSplits(FloatImages(), FloatImages(), None, BINARY),
        ssl_stream=ImageStream(VIEWS, 1, True, views=2),
        ssl_batch_size=2,
        linear_head_splits=DatasetSplits(FloatImages(), FloatImages(), None, BINARY),
        linear_head_train_stream=ImageStream(VIEWS, 1, True),
        linear_head_eval_stream=ImageStream(eval_config, 1, True),
    )
    images = torch.randint(0, 256, (3, 1, 24, 24), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0])

    train = with_trainer(datamodule, training=True).on_after_batch_transfer(
        {SSL_BATCH_KEY: (images, labels), LINEAR_HEAD_BATCH_KEY: (images, labels)}, 0
    )
    (view0, view1), _ = train[SSL_BATCH_KEY]
    head_images, head_labels = train[LINEAR_HEAD_BATCH_KEY]
    assert view0.shape == head_images.shape == (3, 1, 20, 20) and head_labels is labels
    assert not torch.equal(view0, view1)

    validating = with_trainer(datamodule, training=False)
    (val0, val1), _ = validating.on_after_batch_transfer((images, labels), 0)
    assert not torch.equal(val0, val1)  # SSL validation loss on augmented views, as in training
    evaluated, _ = validating.on_after_batch_transfer((images, labels), 1)
    expected = images.float().div(255)[..., 2:22, 2:22]  # the linear head's eval data: preprocess only
    torch.testing.assert_close(evaluated, expected)


def test_ssl_datamodule_gives_the_methods_views_in_training_and_validation():
    datamodule = SSLDataModule(
        ssl_splits=DatasetSplits(FloatImages(), FloatImages(), None, BINARY),
        ssl_stream=ImageStream(VIEWS, 1, True, views=MULTI_CROP),
        ssl_batch_size=2,
    )
    images = torch.randint(0, 256, (3, 1, 24, 24), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 0])
    for training in (True, False):  # SSL validation: the same views as training
        views, _ = with_trainer(datamodule, training=training).on_after_batch_transfer((images, labels), 0)
        assert [tuple(view.shape[-2:]) for view in views] == MULTI_CROP_SHAPES
    with pytest.raises(ValueError, match="the method's views"):
        SSLDataModule(DatasetSplits(FloatImages(), FloatImages(), None, BINARY), ImageStream(VIEWS, 1, True), 2)


def test_device_augmentations_differ_between_processes():
    def first_views(rank: int) -> torch.Tensor:
        datamodule = SSLDataModule(
            ssl_splits=DatasetSplits(FloatImages(), FloatImages(), None, BINARY),
            ssl_stream=ImageStream(VIEWS, 1, True, views=2),
            ssl_batch_size=2,
            seed=3,
        )
        images = torch.full((2, 1, 24, 24), 128, dtype=torch.uint8)
        (view0, _), _ = with_trainer(datamodule, True, rank).on_after_batch_transfer((images, torch.zeros(2)), 0)
        return view0

    torch.testing.assert_close(first_views(0), first_views(0), rtol=0, atol=0)
    assert not torch.equal(first_views(0), first_views(1))


def test_classifier_datamodule_augments_training_batches_only():
    datamodule = ClassifierDataModule(
        DatasetSplits(FloatImages(), FloatImages(), FloatImages(), BINARY),
        train_stream=ImageStream(VIEWS, 1, True),
        eval_stream=ImageStream(VIEWS.preprocess_only(), 1, True),
        batch_size=2,
    )
    images = torch.randint(0, 256, (2, 1, 24, 24), dtype=torch.uint8)
    trained, _ = with_trainer(datamodule, training=True).on_after_batch_transfer((images, torch.zeros(2)), 0)
    evaluated, _ = with_trainer(datamodule, training=False).on_after_batch_transfer((images, torch.zeros(2)), 0)
    expected = images.float().div(255)[..., 2:22, 2:22]
    torch.testing.assert_close(evaluated, expected)
    assert not torch.allclose(trained, expected, atol=0.02)


@pytest.mark.parametrize(
    ("decode_cache", "augment_on_device"),
    [(False, False), (True, False), (False, True)],
    ids=["per_sample_no_cache", "per_sample_from_cache", "on_device_no_cache"],
)
def test_every_pipeline_combination_trains_and_monitors(tmp_path, decode_cache, augment_on_device):
    flags = tiny_demo_flags(tmp_path, num_epochs=1, decode_cache=decode_cache, augment_on_device=augment_on_device)
    assert main(["--model=DemoSimCLR", *flags]) == 0
    metrics = pd.read_csv(tmp_path / "outputs" / "DemoSimCLR" / "test" / "metrics.csv")
    for column in ("ssl/train_loss", "ssl/val_loss", "linear_head/val_auroc", "knn/val_auroc"):
        assert metrics[column].notna().all(), column
    assert (tmp_path / "cache" / "decoded").is_dir() == decode_cache
