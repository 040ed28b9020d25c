"""The registry of dense (image-to-image) networks, for restoration and segmentation heads trained on patches.

Every network built by :func:`create_dense_network` is an ``nn.Module`` with

- ``forward(images (N, in_channels, *patch)) -> (N, out_channels, *patch)``, a linear output (no activation),
  in 2D or 3D;
- ``spec``: the :class:`DenseNetworkSpec` it was built from (recorded in checkpoints to rebuild it);
- ``encoder_prefixes``: the state-dict key prefixes of its encoder (down-sampling) part, so that pretrained
  weights can be transferred into the encoder only (:func:`encoder_keys`, :mod:`innerssl.networks.transfer`);
- ``output_layer_prefixes``: the prefixes of the last layer(s), the ones that map to ``out_channels``.

Entries register here with ``@DENSE_NETWORKS.register("name")`` (users add theirs the same way in a
``--config_module``); ``vit_mae`` registers in :mod:`innerssl.networks.masked_vit`. A factory is
``(spec: DenseNetworkSpec) -> nn.Module``; MONAI is imported inside the factories so that importing this
module stays cheap (the encoder registry imports every module of this package).

Encoder rule per network (MONAI's own state-dict keys):

- ``unet``, ``residual_unet``: MONAI's UNet nests each level as ``Sequential(down, SkipConnection(deeper), up)``,
  so the down path is interleaved with the up path. The encoder is every level's down block
  (``model.0.``, ``model.1.submodule.0.``, ``model.1.submodule.1.submodule.0.`` ...) and the bottom block
  (``model.1.submodule.1.submodule.1.submodule.`` for 4 channels); the up blocks (``...2.``) are the decoder
  and ``model.2.`` is the output layer.
- ``basic_unet``: ``conv_0.``, ``down_1.`` ... ``down_4.``; output ``final_conv.``.
- ``attention_unet``: like the UNet, each level an ``AttentionLayer`` whose ``submodule`` is
  ``Sequential(down, deeper AttentionLayer)``: ``model.0.``, ``model.1.submodule.0.`` ... and the bottom block;
  attention gates, up-convolutions and merges are the decoder; output ``model.2.``.
- ``unetr``: ``vit.`` (the transformer; UNETR's ``encoder1..4`` convolutions read the ViT's hidden states and
  belong to the decoder side); output ``out.``.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from innerssl.errors import UserError
from innerssl.registry import Registry

if TYPE_CHECKING:
    import torch


def _import_entries_outside_this_module() -> None:
    # vit_mae and vit_autoenc live in their own modules, which import this one for the registry.
    for module in ("masked_vit", "vit_autoenc"):
        importlib.import_module(f"innerssl.networks.{module}")


DENSE_NETWORKS: Registry = Registry("dense network", populate=_import_entries_outside_this_module)


def _as_tuples(value: Any) -> Any:
    """Lists (from a checkpoint or JSON) and tuples compare equal after this."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuples(item) for item in value)
    if isinstance(value, dict):
        return {key: _as_tuples(item) for key, item in value.items()}
    return value


def _as_lists(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class DenseNetworkSpec:
    """Everything needed to build a dense network again: its registry name and construction arguments."""

    name: str
    spatial_dims: int = 2
    in_channels: int = 1
    out_channels: int = 1
    patch_size: tuple[int, ...] = ()
    """The training patch: UNETR and the ViTs build their position embeddings for it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra constructor arguments (``channels``, ``hidden_size`` ...); sequences are kept as tuples."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(size) for size in self.patch_size))
        object.__setattr__(self, "options", _as_tuples(dict(self.options)))

    def as_dict(self) -> dict[str, Any]:
        """Plain types only (lists, not tuples), so a checkpoint or a JSON file stores it."""
        return {
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "patch_size": list(self.patch_size),
            "options": _as_lists(self.options),
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> DenseNetworkSpec:
        return cls(
            name=str(state["name"]),
            spatial_dims=int(state.get("spatial_dims", 2)),
            in_channels=int(state.get("in_channels", 1)),
            out_channels=int(state.get("out_channels", 1)),
            patch_size=tuple(state.get("patch_size") or ()),
            options=dict(state.get("options") or {}),
        )


def dense_network_names() -> list[str]:
    """Registered dense networks, for --help and error messages."""
    return DENSE_NETWORKS.names()


def create_dense_network(spec: DenseNetworkSpec) -> nn.Module:
    """A randomly initialised dense network following the contract of this module."""
    if spec.spatial_dims not in (2, 3):
        raise UserError(f"spatial_dims must be 2 or 3, got {spec.spatial_dims}")
    for what, channels in (("in_channels", spec.in_channels), ("out_channels", spec.out_channels)):
        if channels < 1:
            raise UserError(f"{what} must be a positive number of channels, got {channels}")
    if len(spec.patch_size) != spec.spatial_dims or min(spec.patch_size, default=0) < 1:
        raise UserError(
            f"--patch_size {spec.patch_size} must give {spec.spatial_dims} positive sizes "
            f"for a {spec.spatial_dims}D network (e.g. --patch_size={','.join(['64'] * spec.spatial_dims)})"
        )
    factory = DENSE_NETWORKS.get(spec.name)
    network = factory(spec)
    for attribute in ("encoder_prefixes", "output_layer_prefixes"):
        if not getattr(network, attribute, None):
            raise TypeError(f"Dense network '{spec.name}' does not follow the dense contract: no {attribute}")
    network.spec = spec
    return network


def encoder_keys(network: nn.Module, keys: Iterable[str] | None = None) -> list[str]:
    """The state-dict keys (of ``keys``, default the network's own) that belong to the network's encoder."""
    prefixes = tuple(network.encoder_prefixes)
    candidates = network.state_dict().keys() if keys is None else keys
    return [key for key in candidates if key.startswith(prefixes)]


def is_encoder_key(network: nn.Module) -> Callable[[str], bool]:
    """A predicate for ``transfer_weights(only_keys=...)``: transfer into the encoder only."""
    prefixes = tuple(network.encoder_prefixes)
    return lambda key: key.startswith(prefixes)


def check_divisible(spec: DenseNetworkSpec, divisor: Sequence[int], why: str) -> None:
    """Each patch size must be a multiple of the network's total down-sampling (or token size) along its axis."""
    for size, factor in zip(spec.patch_size, divisor):
        if size % factor:
            raise UserError(
                f"--patch_size {spec.patch_size} does not suit {spec.name}: each size must be divisible by "
                f"{tuple(divisor)} ({why}); e.g. --patch_size={','.join(str(4 * f) for f in divisor)}"
            )


def _per_axis_product(strides: Sequence[int | Sequence[int]], spatial_dims: int) -> tuple[int, ...]:
    """The total down-sampling per axis; MONAI allows a stride per axis in each level."""
    total = [1] * spatial_dims
    for stride in strides:
        per_axis = [stride] * spatial_dims if isinstance(stride, int) else list(stride)
        total = [t * int(s) for t, s in zip(total, per_axis)]
    return tuple(total)


def _check_bottom(spec: DenseNetworkSpec, down_sampling: Sequence[int]) -> None:
    """Instance/batch norm at the bottom cannot train on a single voxel."""
    if math.prod(size // factor for size, factor in zip(spec.patch_size, down_sampling)) < 2:
        raise UserError(
            f"--patch_size {spec.patch_size} leaves a single voxel at the bottom of {spec.name} "
            f"(down-sampling {tuple(down_sampling)}), which normalisation cannot train on: "
            "double the patch along at least one axis"
        )


def _build(spec: DenseNetworkSpec, constructor: Callable[..., nn.Module], **arguments: Any) -> nn.Module:
    """Construct with the spec's remaining options; options MONAI rejects are the user's error."""
    try:
        return constructor(**arguments)
    except (TypeError, ValueError) as error:
        raise UserError(
            f"Dense network '{spec.name}' cannot be built with these options ({error}): check them"
        ) from None


def _sequence(value: Any) -> tuple:
    """A per-level option as a tuple: ``strides=2`` on the command line is one level."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def _options(spec: DenseNetworkSpec, defaults: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **spec.options}


VIT_PRESETS: dict[str, dict[str, int]] = {
    "base": {"hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12},
    "small": {"hidden_size": 384, "mlp_dim": 1536, "num_layers": 12, "num_heads": 6},
    "tiny": {"hidden_size": 192, "mlp_dim": 768, "num_layers": 12, "num_heads": 3},
}
"""ViT sizes by name (``--network_options=preset=small``) for the ViT networks (vit_autoenc, vit_mae, unetr): base is
MONAI's tutorial ViT-B, small and tiny the usual ViT-S and ViT-Ti widths for CPUs and small ROIs. Options given beside
a preset replace its values (``preset=small,num_layers=4``)."""


def vit_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``preset`` replaced by its sizes (explicit options win)."""
    options = dict(options)
    preset = options.pop("preset", None)
    if preset is None:
        return options
    if preset not in VIT_PRESETS:
        raise UserError(f"ViT option preset={preset} is not one of {', '.join(VIT_PRESETS)}: choose one of them")
    return {**VIT_PRESETS[str(preset)], **options}


def _unet_prefixes(levels: int) -> tuple[str, ...]:
    """Down blocks of MONAI's nested UNet, then its bottom block (see the module docstring)."""
    downs = tuple("model." + "1.submodule." * depth + "0." for depth in range(levels - 1))
    return (*downs, "model." + "1.submodule." * (levels - 1))


def _attention_unet_prefixes(levels: int) -> tuple[str, ...]:
    """Down blocks of MONAI's AttentionUnet (``model.0`` then inside nested AttentionLayers), then its bottom."""
    downs = tuple("model.1" + ".submodule.1" * (depth - 1) + ".submodule.0." for depth in range(1, levels - 1))
    return ("model.0.", *downs, "model.1" + ".submodule.1" * (levels - 2) + ".submodule.")


def _unet(spec: DenseNetworkSpec, num_res_units: int) -> nn.Module:
    from monai.networks.nets import UNet

    options = _options(spec, {"channels": (16, 32, 64, 128), "strides": (2, 2, 2), "num_res_units": num_res_units})
    channels, strides = _sequence(options["channels"]), _sequence(options["strides"])
    if len(strides) != len(channels) - 1:
        raise UserError(f"{spec.name} needs one stride fewer than channels, got channels {channels}, strides {strides}")
    check_divisible(spec, _per_axis_product(strides, spec.spatial_dims), f"the product of the strides {strides}")
    options.update(channels=channels, strides=strides)
    network = _build(
        spec,
        UNet,
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        **options,
    )
    network.encoder_prefixes = _unet_prefixes(len(channels))
    network.output_layer_prefixes = ("model.2.",)
    return network


@DENSE_NETWORKS.register("unet")
def build_unet(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's UNet with plain convolutions (``num_res_units=0``)."""
    return _unet(spec, num_res_units=0)


@DENSE_NETWORKS.register("residual_unet")
def build_residual_unet(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's UNet with two residual units per level, the counterpart of BiaPy's residual U-Net."""
    return _unet(spec, num_res_units=2)


@DENSE_NETWORKS.register("basic_unet")
def build_basic_unet(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's BasicUNet: four fixed down-samplings by 2."""
    from monai.networks.nets import BasicUNet

    options = _options(spec, {"features": (16, 16, 32, 64, 128, 16)})
    options["features"] = _sequence(options["features"])
    down_sampling = (16,) * spec.spatial_dims
    check_divisible(spec, down_sampling, "basic_unet down-samples 4 times by 2")
    _check_bottom(spec, down_sampling)
    network = _build(
        spec,
        BasicUNet,
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        **options,
    )
    network.encoder_prefixes = ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4.")
    network.output_layer_prefixes = ("final_conv.",)
    return network


@DENSE_NETWORKS.register("attention_unet")
def build_attention_unet(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's AttentionUnet (attention gates on the skip connections)."""
    from monai.networks.nets import AttentionUnet

    options = _options(spec, {"channels": (16, 32, 64, 128), "strides": (2, 2, 2)})
    channels, strides = _sequence(options["channels"]), _sequence(options["strides"])
    if len(channels) < 2 or len(strides) != len(channels) - 1:
        raise UserError(
            f"attention_unet needs at least 2 channels and one stride fewer, got channels {channels}, strides {strides}"
        )
    check_divisible(spec, _per_axis_product(strides, spec.spatial_dims), f"the product of the strides {strides}")
    options.update(channels=channels, strides=strides)
    network = _build(
        spec,
        AttentionUnet,
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        **options,
    )
    network.encoder_prefixes = _attention_unet_prefixes(len(channels))
    network.output_layer_prefixes = ("model.2.",)
    return network


UNETR_DEFAULTS: dict[str, Any] = {
    "feature_size": 16,
    "norm_name": "instance",
    "res_block": True,
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "proj_type": "conv",
    "vit_patch_size": 16,
}
UNETR_TOKEN_SIZE = 16
"""MONAI's UNETR decoder up-samples the tokens four times by 2, so its ViT tokens are 16 voxels wide."""


def _skip_layers(num_layers: int) -> tuple[int, int, int]:
    """The transformer layers whose outputs feed UNETR's skips: MONAI's 3, 6, 9 of 12, spread alike otherwise."""
    first, second, third = (min(num_layers - 1, num_layers * quarter // 4) for quarter in (1, 2, 3))
    return first, second, third


@functools.cache
def _unetr_class() -> type[nn.Module]:
    from monai.networks.nets import UNETR, ViT

    class DepthUNETR(UNETR):
        """MONAI's UNETR with a ViT of any depth: MONAI 1.6 fixes it to 12 layers and skips from 3, 6, 9."""

        def __init__(self, num_layers: int, **arguments: Any) -> None:
            super().__init__(**arguments)
            self.num_layers = num_layers
            self.skip_layers = _skip_layers(num_layers)
            if num_layers != 12:
                self.vit = ViT(
                    in_channels=arguments["in_channels"],
                    img_size=arguments["img_size"],
                    patch_size=self.patch_size,
                    hidden_size=self.hidden_size,
                    mlp_dim=arguments.get("mlp_dim", 3072),
                    num_layers=num_layers,
                    num_heads=arguments.get("num_heads", 12),
                    proj_type=arguments.get("proj_type", "conv"),
                    classification=False,
                    dropout_rate=arguments.get("dropout_rate", 0.0),
                    spatial_dims=arguments["spatial_dims"],
                    qkv_bias=arguments.get("qkv_bias", False),
                    save_attn=arguments.get("save_attn", False),
                )

        def forward(self, x_in: torch.Tensor) -> torch.Tensor:
            x, hidden_states_out = self.vit(x_in)
            first, second, third = self.skip_layers
            enc1 = self.encoder1(x_in)
            enc2 = self.encoder2(self.proj_feat(hidden_states_out[first]))
            enc3 = self.encoder3(self.proj_feat(hidden_states_out[second]))
            enc4 = self.encoder4(self.proj_feat(hidden_states_out[third]))
            dec3 = self.decoder5(self.proj_feat(x), enc4)
            dec2 = self.decoder4(dec3, enc3)
            dec1 = self.decoder3(dec2, enc2)
            return self.out(self.decoder2(dec1, enc1))

    DepthUNETR.__module__ = __name__
    DepthUNETR.__qualname__ = "DepthUNETR"
    return DepthUNETR


def __getattr__(name: str) -> Any:
    """``DepthUNETR`` is built on first use (MONAI imports slowly) yet pickles by this module's name."""
    if name == "DepthUNETR":
        return _unetr_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@DENSE_NETWORKS.register("unetr")
def build_unetr(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's UNETR over the training patch; small ViTs by the options (``hidden_size=96, num_layers=2`` ...)."""
    options = {**UNETR_DEFAULTS, **vit_options(spec.options)}
    token_size = int(options.pop("vit_patch_size"))
    if token_size != UNETR_TOKEN_SIZE:
        raise UserError(
            f"unetr option vit_patch_size={token_size} is not supported: MONAI's UNETR decoder is built for "
            f"{UNETR_TOKEN_SIZE}-voxel tokens; leave vit_patch_size at {UNETR_TOKEN_SIZE}"
        )
    num_layers = int(options.pop("num_layers"))
    if num_layers < 1:
        raise UserError(f"unetr option num_layers must be at least 1, got {num_layers}")
    check_divisible(spec, (token_size,) * spec.spatial_dims, f"the ViT token size vit_patch_size={token_size}")
    network = _build(
        spec,
        _unetr_class(),
        num_layers=num_layers,
        spatial_dims=spec.spatial_dims,
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        img_size=spec.patch_size,
        **options,
    )
    network.encoder_prefixes = ("vit.",)
    network.output_layer_prefixes = ("out.",)
    return network
