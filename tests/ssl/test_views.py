"""Every registered SSL method trains on the views it declares, made by either augmentation path from tiny images
of 1 and 3 channels: a new method in ``innerssl.ssl``'s registry is tested here without being listed."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from innerssl.augment.config import parse_augmentation_config
from innerssl.augment.views import ViewGroup, total_views
from innerssl.batches import SSL_BATCH_KEY
from innerssl.data.pipeline import ImageStream
from innerssl.errors import UserError
from innerssl.ssl import METHODS
from innerssl.ssl.base import SSLModule, ssl_views

CONFIG = parse_augmentation_config(
    {
        "preprocess": {"resize": 36, "center_crop_size": 32},
        "augmentation": {
            "use_random_crop": True,
            "use_random_horizontal_flip": True,
            "use_random_color": True,
            "use_gaussian_blur": True,
            "random_crop": {"scale": [0.5, 1.0]},
            "random_color": {"brightness": 0.4, "contrast": 0.4},
        },
    },
    "test views",
)
SMALL_HEADS = {
    "projection_hidden_dim": 32,
    "projection_dim": 16,
    "output_dim": 32,
    "decoder_dim": 32,
    "decoder_depth": 1,
}
"""Small heads for the methods whose ``__init__`` takes these arguments."""
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "DINO": [{"num_local_crops": 0}, {"num_local_crops": 2, "local_crop_size": 16, "global_crop_scale": [0.4, 1.0]}],
}
"""Hyperparameters that change a method's views, tried beside its defaults (every method runs with its defaults)."""
DYNAMIC_SIZE = {"dynamic_img_size": True, "dynamic_img_pad": True}
"""DINO's local crops are smaller than its global views, and of sides the patch size need not divide."""
ENCODERS = {
    "cnn": ("resnet18", {}),
    "vit": ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, **DYNAMIC_SIZE}),
}
"""A CNN and a (two-block) ViT: every registered method is tested with both."""
BATCH = 4


def method_cases() -> Iterator[Any]:
    for name in METHODS.names():
        for index, hyperparameters in enumerate([{}, *VARIANTS.get(name, [])]):
            yield pytest.param(name, hyperparameters, id=f"{name}-{index}" if index else name)


def tiny_method(method: type[SSLModule], channels: int, encoder: str = "cnn", **hyperparameters: Any) -> SSLModule:
    accepted = inspect.signature(method.__init__).parameters
    small = {name: value for name, value in SMALL_HEADS.items() if name in accepted}
    encoder_name, options = ENCODERS[encoder]
    torch.manual_seed(0)
    return method(encoder_name=encoder_name, in_channels=channels, encoder_options=options, **small, **hyperparameters)


def takes(method: type[SSLModule], encoder: str) -> bool:
    """Whether ``method`` trains this kind of encoder (MAE: ViTs only)."""
    layout = "tokens" if encoder == "vit" else "map"
    return layout in method.encoder_layouts


def ssl_batch(stream: ImageStream, channels: int) -> tuple[Any, torch.Tensor]:
    """One SSL batch as the module receives it: augmented on the device, or per sample and collated."""
    generator = torch.Generator().manual_seed(0)
    stored = torch.randint(0, 256, (BATCH, channels, 36, 36), dtype=torch.uint8, generator=generator)
    labels = torch.zeros(BATCH, dtype=torch.long)
    if stream.on_device:
        return stream.apply((stored, labels))
    items = [(image.float() / 255, 0) for image in stored]
    dataset = stream.loader_dataset(items)  # type: ignore[arg-type]
    return default_collate([dataset[index] for index in range(BATCH)])


@pytest.mark.parametrize("encoder", list(ENCODERS))
@pytest.mark.parametrize("on_device", [False, True], ids=["per_sample", "on_device"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("name", "hyperparameters"), list(method_cases()))
def test_every_method_trains_and_validates_on_the_views_it_declares(
    name, hyperparameters, channels, on_device, encoder
):
    method = METHODS.get(name)
    if not takes(method, encoder):
        with pytest.raises(UserError):
            tiny_method(method, channels, encoder, **hyperparameters)
        return
    groups = method.view_groups(hyperparameters)
    model = tiny_method(method, channels, encoder, **hyperparameters)
    assert model.declared_views == groups  # the instance's views are the classmethod's, from its hyperparameters
    stream = ImageStream(CONFIG, channels, on_device, views=groups)
    batch = ssl_batch(stream, channels)
    views = ssl_views({SSL_BATCH_KEY: batch})
    assert len(views) == total_views(groups)
    sizes = [group.size for group in groups for _ in range(group.count)]
    for view, size in zip(views, sizes):
        side = 32 if size is None else (round(size) if size > 1 else round(size * 32))
        assert view.shape == (BATCH, channels, side, side)

    loss = model.ssl_loss(*views)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    first_layer = next(p for p in model.encoder.parameters() if p.ndim == 4)  # the conv stem / patch embedding
    assert first_layer.grad is not None and first_layer.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model.ssl_loss(*views))  # the SSL validation loss: the same views


@pytest.mark.parametrize("name", METHODS.names())
def test_a_wrong_number_of_views_is_refused_plainly(name):
    method = METHODS.get(name)
    model = tiny_method(method, 1, "cnn" if takes(method, "cnn") else "vit")
    expected = total_views(method.view_groups())
    views = [torch.rand(4, 1, 32, 32) for _ in range(expected + 1)]
    with pytest.raises(ValueError, match=f"takes {expected} views per image"):
        model.ssl_loss(*views)


def test_view_groups_default_to_the_init_defaults():
    for method in map(METHODS.get, METHODS.names()):
        assert method.view_groups() == method.view_groups({}) == method.view_groups(None)
        assert total_views(method.view_groups()) >= 1


class OneView(SSLModule):
    """A single-view method (as a masked autoencoder would be): one view of the config's size per image."""

    method_name = "OneView"

    @classmethod
    def view_groups(cls, hyperparameters: Any = None) -> tuple[ViewGroup, ...]:
        return (ViewGroup(1),)

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        (view,) = self.checked_views(views)
        return self.encoder(view).pow(2).mean()


@pytest.mark.parametrize("on_device", [False, True], ids=["per_sample", "on_device"])
def test_a_single_view_method_gets_one_view(on_device):
    model = OneView(encoder_name="resnet18", in_channels=1)
    stream = ImageStream(CONFIG, 1, on_device, views=OneView.view_groups())
    batch = ssl_batch(stream, 1)
    views = ssl_views(batch)
    assert len(views) == 1 and views[0].shape == (BATCH, 1, 32, 32)
    assert torch.isfinite(model.ssl_loss(*views))
    images = torch.rand(BATCH, 1, 32, 32)
    assert len(ssl_views((images, None))) == 1  # a plain image batch counts as one view
