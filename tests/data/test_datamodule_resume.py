"""Training loaders that continue where a checkpoint stopped, and a labeled batch for every SSL batch."""

import pytest
import torch
from torch.utils.data import Dataset

from innerssl.augment.config import parse_augmentation_config
from innerssl.augment.views import ViewGroup
from innerssl.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.datamodule import ClassifierDataModule, SSLDataModule
from innerssl.data.datasets.base import DatasetSplits, LabelInfo
from innerssl.data.pipeline import ImageStream
from innerssl.data.sampling import TrainingPosition

PREPROCESS = parse_augmentation_config({"preprocess": {"resize": 8}}, "test")
MULTI_CROP = (ViewGroup(2, crop_scale=(0.4, 1.0)), ViewGroup(2, size=4, crop_scale=(0.05, 0.4), role="local"))
"""DINO-style views: their crops of the constant images keep each image's value, so batches still tell items."""


class Numbered(Dataset):
    """Image ``i`` is filled with the value ``i / 1000``, so a batch tells which items it holds."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return torch.full((1, 8, 8), index / 1000), index % 2


def splits(train: int, val: int = 4) -> DatasetSplits:
    return DatasetSplits(Numbered(train), Numbered(val), Numbered(val), LabelInfo("binary", ("a", "b")))


def stream() -> ImageStream:
    return ImageStream(PREPROCESS, in_channels=1, augment_on_device=False)


def items(batch: torch.Tensor) -> list[int]:
    return [round(float(image[0, 0, 0]) * 1000) for image in batch]


def ssl_module(ssl_size: int, labeled_size: int, views: int | tuple[ViewGroup, ...] = 2) -> SSLDataModule:
    return SSLDataModule(
        ssl_splits=splits(ssl_size),
        ssl_stream=ImageStream(PREPROCESS, in_channels=1, augment_on_device=False, views=views),
        ssl_batch_size=4,
        linear_head_splits=splits(labeled_size),
        linear_head_train_stream=stream(),
        linear_head_eval_stream=stream(),
        linear_head_batch_size=3,
        seed=7,
    )


def test_a_labeled_batch_for_every_ssl_batch_whatever_the_sizes():
    for labeled_size in (5, 40):  # fewer labeled images than one epoch needs, and more
        loaders = ssl_module(ssl_size=21, labeled_size=labeled_size).train_dataloader()
        ssl, labeled = loaders[SSL_BATCH_KEY], loaders[LINEAR_HEAD_BATCH_KEY]
        assert len(ssl) == 5  # 21 images in full batches of 4
        assert len(labeled) == len(ssl) and len(list(labeled)) == 5
        for images, _labels in labeled:
            assert len(set(items(images))) == len(images) == 3  # no image twice in a batch


@pytest.mark.parametrize("views", [2, MULTI_CROP], ids=["two_views", "multi_crop"])
def test_a_mid_epoch_position_leaves_out_the_batches_already_trained_on(views):
    fresh = ssl_module(ssl_size=24, labeled_size=24, views=views)
    loader = fresh.train_dataloader()[SSL_BATCH_KEY]
    loader.sampler.set_epoch(2)
    whole_epoch = [items(batch_views[0]) for batch_views, _ in loader]
    assert sorted(i for batch in whole_epoch for i in batch) == list(range(24))

    resumed = ssl_module(ssl_size=24, labeled_size=24, views=views)
    resumed.load_state_dict({"position": TrainingPosition(epoch=2, batches_done=4, world_size=1).as_dict()})
    loaders = resumed.train_dataloader()
    ssl, labeled = loaders[SSL_BATCH_KEY], loaders[LINEAR_HEAD_BATCH_KEY]
    # Lightning restores its own batch counter and needs the whole epoch's length; the iterator gives the rest.
    assert len(ssl) == len(labeled) == 6
    rest = [items(batch_views[-1]) for batch_views, _ in ssl]  # the last view: a local crop with multi-crop
    assert rest == whole_epoch[4:]
    assert len(list(labeled)) == 2


def test_the_position_is_saved_with_the_datamodule_state():
    module = ClassifierDataModule(splits(10), stream(), stream(), batch_size=2)
    assert module.state_dict() == {}
    module.position = TrainingPosition(epoch=1, batches_done=3, world_size=2)
    restored = ClassifierDataModule(splits(10), stream(), stream(), batch_size=2)
    restored.load_state_dict(module.state_dict())
    assert restored.resume_position == module.position
    sampler = restored.train_dataloader().sampler
    assert sampler.epoch == 1 and sampler.resume_samples_done == 3 * 2 * 2
