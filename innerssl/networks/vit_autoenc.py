"""MONAI's ``ViTAutoEnc`` (the network of MONAI's self-supervised pretraining tutorial) as a dense network, 2D and 3D.

The encoder is MONAI's ViT (``patch_embedding.``, ``blocks.``, ``norm.``: the same names and shapes a UNETR holds
under ``vit.``, so segmentation rebuilds it inside a UNETR from the options ``token_size``, ``hidden_size``,
``mlp_dim``, ``num_layers``, ``num_heads``). The decoder is two transposed convolutions whose kernel and stride are
``sqrt(token_size)`` per axis, so together they up-sample a token back to ``token_size`` voxels: the token size
must be a perfect square (4, 9, 16 ...; the tutorial and UNETR use 16) and the patch a multiple of it.

MONAI's ``forward`` returns ``(reconstruction, hidden_states)``; :class:`ViTAutoEncoder` returns the
reconstruction only, as the dense contract wants. MONAI is imported on first use (module ``__getattr__``), as in
:mod:`innerssl.networks.masked_vit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from innerssl.errors import UserError
from innerssl.networks.dense import DENSE_NETWORKS, DenseNetworkSpec, _build, check_divisible, vit_options

if TYPE_CHECKING:
    from monai.networks.nets import ViTAutoEnc as ViTAutoEncoder  # noqa: F401  (the type, for checkers)

__all__ = ["VIT_AUTOENC_DEFAULTS", "ViTAutoEncoder", "build_vit_autoenc", "autoenc_token_size"]

VIT_AUTOENC_DEFAULTS: dict[str, Any] = {
    "token_size": 16,
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_layers": 12,
    "num_heads": 12,
}
"""The tutorial's ViTAutoEnc (ViT-B over 16-voxel tokens); every entry is a --network_options name."""


def autoenc_token_size(token_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    """The token size per axis; each must be a perfect square (the decoder up-samples twice by its root)."""
    sizes = (int(token_size),) * spatial_dims if isinstance(token_size, int) else tuple(int(s) for s in token_size)
    if len(sizes) != spatial_dims or any(size < 1 or math.isqrt(size) ** 2 != size for size in sizes):
        raise UserError(
            f"vit_autoenc option token_size={token_size} is not allowed: its decoder up-samples twice by the square "
            "root of the token size, so give perfect squares (4, 9, 16 ...; 16 for a UNETR afterwards)"
        )
    return sizes


@functools.cache
def _autoenc_class() -> type[nn.Module]:
    from monai.networks.nets import ViTAutoEnc

    class ViTAutoEncoder(ViTAutoEnc):
        """MONAI's ViTAutoEnc returning only its reconstruction ``(N, out_channels, *patch)``."""

        def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
            reconstruction, _hidden_states = super().forward(x)
            return reconstruction

    ViTAutoEncoder.__module__ = __name__
    ViTAutoEncoder.__qualname__ = "ViTAutoEncoder"
    return ViTAutoEncoder


def __getattr__(name: str) -> Any:
    """``ViTAutoEncoder`` is built on first use (MONAI imports slowly) yet pickles by this module's name."""
    if name == "ViTAutoEncoder":
        return _autoenc_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@DENSE_NETWORKS.register("vit_autoenc")
def build_vit_autoenc(spec: DenseNetworkSpec) -> nn.Module:
    """MONAI's ViTAutoEnc over the training patch (the tutorial's ViT-B unless the options make it smaller)."""
    options = {**VIT_AUTOENC_DEFAULTS, **vit_options(spec.options)}
    token_size = autoenc_token_size(options.pop("token_size"), spec.spatial_dims)
    check_divisible(spec, token_size, f"the ViT token size token_size={token_size}")
    network = _build(
        spec,
        _autoenc_class(),
        in_channels=spec.in_channels,
        out_channels=spec.out_channels,
        img_size=spec.patch_size,
        patch_size=token_size,
        spatial_dims=spec.spatial_dims,
        proj_type="conv",
        dropout_rate=0.0,
        **options,
    )
    network.encoder_prefixes = ("patch_embedding.", "blocks.", "norm.")
    network.output_layer_prefixes = ("conv3d_transpose_1.",)
    return network
