"""The encoder contract, how an encoder is described (so a checkpoint can rebuild it), and how it is built.

Every encoder is an ``nn.Module`` with

- ``feature_dim``: the size of its pooled embedding, and ``spatial_dims`` (2 for images, 3 for volumes);
- ``forward(images) -> (N, feature_dim)``: pooled embeddings, what monitors, classifiers and most SSL
  methods use; images are channel-first ``(N, in_channels, *spatial)`` with any positive ``in_channels``;
- ``forward_features(images)``: the unpooled output, a feature map ``(N, C, *spatial)`` for CNNs or tokens
  ``(N, T, D)`` for ViTs (``feature_layout`` says which), for methods and decoders that need it;
- ``input_layer_name``: the state-dict prefix of the first layer, whose weights are adapted when starting
  weights have another channel count.

An :class:`EncoderSpec` (registry name, channels, spatial dims, construction options such as a ViT's image and
patch size) is recorded in every checkpoint, so the classifier, the comparison and export rebuild any
registered encoder from a checkpoint alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from innerssl.errors import UserError
from innerssl.networks.registry import ENCODERS, family_of


@dataclass(frozen=True)
class EncoderSpec:
    """Everything needed to build an encoder again: its registry name and construction arguments."""

    name: str
    in_channels: int = 1
    spatial_dims: int = 2
    options: dict[str, Any] = field(default_factory=dict)
    """Extra construction arguments of the family (e.g. ``img_size``, ``patch_size`` of a timm ViT)."""

    @property
    def model_name(self) -> str:
        """The part after a family prefix (``timm:resnet18`` -> ``resnet18``), or the whole name."""
        return self.name.partition(":")[2] or self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> EncoderSpec:
        return cls(
            name=str(state["name"]),
            in_channels=int(state.get("in_channels", 1)),
            spatial_dims=int(state.get("spatial_dims", 2)),
            options=dict(state.get("options") or {}),
        )


def encoder_names() -> list[str]:
    """Registered names and families (``timm:<model>``), for --help and error messages."""
    return [name + "<model>" if name.endswith(":") else name for name in ENCODERS.names()]


def create_encoder(name: str | EncoderSpec, in_channels: int = 1, spatial_dims: int = 2, **options: Any) -> nn.Module:
    """A randomly initialised encoder following the contract (starting weights: :mod:`innerssl.networks.weights`)."""
    spec = name if isinstance(name, EncoderSpec) else EncoderSpec(name, in_channels, spatial_dims, dict(options))
    if spec.in_channels < 1:
        raise UserError(f"in_channels must be a positive number of channels, got {spec.in_channels}")
    if spec.spatial_dims not in (2, 3):
        raise UserError(f"spatial_dims must be 2 or 3, got {spec.spatial_dims}")
    key = family_of(spec.name)
    if key.endswith(":") and key == spec.name:
        raise UserError(f"Encoder '{spec.name}' names a family but no model: e.g. {spec.name}resnet18")
    factory = ENCODERS.get(key)
    encoder = factory(spec)
    for attribute in ("feature_dim", "spatial_dims"):
        if not hasattr(encoder, attribute):
            raise TypeError(f"Encoder '{spec.name}' does not follow the encoder contract: no {attribute}")
    encoder.spec = spec
    return encoder


def describe(encoder: nn.Module) -> EncoderSpec:
    """The spec an encoder was built from."""
    spec = getattr(encoder, "spec", None)
    if not isinstance(spec, EncoderSpec):
        raise TypeError("This encoder was not built by innerssl.networks.create_encoder")
    return spec
