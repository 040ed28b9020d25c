"""MONAI's masked-autoencoder ViT with explicit token masks (random or grid), for 2D and 3D, and its helpers.

:class:`MaskedViT` subclasses ``monai.networks.nets.MaskedAutoEncoderViT``: the mask is an argument
``(N, T)`` bool (True = masked) instead of MONAI's own ``torch.multinomial`` draw, so the method decides the
masking (seeded, random or BiaPy's grid) and the same mask is used for the loss and the pictures. Two changes
to MONAI's layout: the encoder's final LayerNorm is ``norm`` (MONAI puts it last in ``blocks``) so that the
encoder keys are exactly those of MONAI's ``ViT`` (``patch_embedding.``, ``blocks.``, ``norm.``, what a UNETR
holds under ``vit.``); and ``decoder_pred`` predicts ``out_channels`` per voxel (default ``in_channels``).

Tokens are ordered row-major over the token grid, as MONAI's convolutional patch embedding flattens them.
A patch vector (what ``decoder_pred`` predicts per token) is laid out as MAE and BiaPy do: the token's voxels
row-major, channels last (``n (g1 g2) (p1 p2 c)`` in 2D); :func:`patchify` and :func:`unpatchify` are exact
inverses with that layout.

MONAI is imported only when :class:`MaskedViT` is first used (module ``__getattr__``), because the encoder
registry imports every module of this package and MONAI's networks take seconds to import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from innerssl.errors import UserError
from innerssl.networks.dense import DENSE_NETWORKS, DenseNetworkSpec, vit_options

if TYPE_CHECKING:
    from monai.networks.nets import MaskedAutoEncoderViT as MaskedViT  # noqa: F401  (the type, for checkers)

__all__ = [
    "MaskedViT",
    "grid_token_mask",
    "mask_to_pixels",
    "patchify",
    "random_token_mask",
    "token_grid",
    "unpatchify",
]


def _per_axis(size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    return (int(size),) * spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)


def token_grid(image_size: Sequence[int], token_size: int | Sequence[int]) -> tuple[int, ...]:
    """Tokens per axis; the image must split into whole tokens."""
    tokens = _per_axis(token_size, len(image_size))
    if len(tokens) != len(image_size) or any(size % token for size, token in zip(image_size, tokens)):
        raise UserError(
            f"--patch_size {tuple(image_size)} does not split into --mae_token_size {tokens} tokens: "
            "each patch size must be a multiple of the token size"
        )
    return tuple(size // token for size, token in zip(image_size, tokens))


def random_token_mask(
    batch: int,
    grid: Sequence[int],
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """``(batch, T)`` bool, True = masked: exactly ``round(ratio * T)`` tokens per image (at least 1, at most T-1).

    The same count for every image keeps the visible tokens of a batch one tensor; ``generator`` makes it
    reproducible (drawn on the generator's device, then moved to ``device``).
    """
    total = math.prod(grid)
    if not 0 < ratio < 1:
        raise UserError(f"--mae_mask_ratio must be strictly between 0 and 1, got {ratio}")
    if total < 2:
        raise UserError(
            f"Masking needs at least 2 tokens but the token grid {tuple(grid)} has {total}: "
            "use a larger --patch_size or a smaller --mae_token_size"
        )
    count = min(total - 1, max(1, round(ratio * total)))
    draw_device = generator.device if generator is not None else device
    noise = torch.rand((batch, total), generator=generator, device=draw_device)
    mask = torch.zeros(batch, total, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, noise.argsort(dim=1)[:, :count], True)
    return mask if device is None else mask.to(device)


def grid_token_mask(batch: int, grid: Sequence[int], device: torch.device | str | None = None) -> Tensor:
    """``(batch, T)`` bool: a checkerboard, the token at grid index (i, j[, k]) masked when i + j (+ k) is odd.

    Follows BiaPy's ``MaskedAutoencoderViT(masking_type="grid")``, a fixed pattern that keeps half of the tokens,
    with two deliberate differences: BiaPy masks the even cells (``mask[::2, ::2] = mask[1::2, 1::2] = 1``), we
    mask the odd ones (the same checkerboard shifted by one token, so token 0 stays visible and an odd token count
    masks floor(T/2)); and in 3D BiaPy marks only the all-even and all-odd cells (a quarter of the tokens) while
    keeping half, which disagree, whereas this is the true 3D checkerboard (half of the tokens).
    """
    axes = torch.meshgrid(*(torch.arange(size, device=device) for size in grid), indexing="ij")
    odd = (sum(axes) % 2 == 1).flatten()
    return odd.unsqueeze(0).repeat(batch, 1)


def patchify(images: Tensor, token_size: int | Sequence[int]) -> Tensor:
    """``(N, C, *spatial) -> (N, T, prod(token) * C)``: tokens row-major, their voxels row-major, channels last."""
    batch, channels, *spatial = images.shape
    dims = len(spatial)
    tokens = _per_axis(token_size, dims)
    grid = token_grid(spatial, tokens)
    split = [batch, channels]
    for count, size in zip(grid, tokens):
        split += [count, size]
    # (N, C, g1, p1, g2, p2, ...) -> (N, g1, g2, ..., p1, p2, ..., C)
    order = [0, *(2 + 2 * axis for axis in range(dims)), *(3 + 2 * axis for axis in range(dims)), 1]
    return images.reshape(split).permute(order).reshape(batch, math.prod(grid), math.prod(tokens) * channels)


def unpatchify(patches: Tensor, image_size: Sequence[int], token_size: int | Sequence[int], channels: int) -> Tensor:
    """The inverse of :func:`patchify`: ``(N, T, prod(token) * C) -> (N, C, *image_size)``."""
    dims = len(image_size)
    tokens = _per_axis(token_size, dims)
    grid = token_grid(image_size, tokens)
    batch = patches.shape[0]
    expected = (math.prod(grid), math.prod(tokens) * channels)
    if tuple(patches.shape[1:]) != expected:
        raise ValueError(f"patches of shape {tuple(patches.shape)} do not match (N, T, prod(token) * C) = {expected}")
    x = patches.reshape(batch, *grid, *tokens, channels)
    # (N, g1, g2, ..., p1, p2, ..., C) -> (N, C, g1, p1, g2, p2, ...)
    order = [0, 1 + 2 * dims]
    for axis in range(dims):
        order += [1 + axis, 1 + dims + axis]
    return x.permute(order).reshape(batch, channels, *image_size)


def mask_to_pixels(mask: Tensor, image_size: Sequence[int], token_size: int | Sequence[int]) -> Tensor:
    """``(N, T)`` token mask -> ``(N, 1, *image_size)`` bool voxel mask, for masked losses and pictures."""
    tokens = _per_axis(token_size, len(image_size))
    voxels = mask.unsqueeze(-1).expand(*mask.shape, math.prod(tokens))
    return unpatchify(voxels, image_size, tokens, channels=1).bool()


@functools.cache
def _masked_vit_class() -> type[nn.Module]:
    from monai.networks.nets import MaskedAutoEncoderViT

    class MaskedViT(MaskedAutoEncoderViT):
        """MONAI's masked autoencoder ViT taking an explicit token mask; see the module docstring.

        ``forward(x, mask)`` with a mask returns ``(patches (N, T, prod(token) * out_channels), mask)``;
        ``forward(x)`` without one masks nothing and returns the unpatchified prediction ``(N, out_channels,
        *spatial)``, so the network fits the dense contract (tiling, whole-image inference).
        """

        def __init__(
            self,
            in_channels: int,
            img_size: Sequence[int] | int,
            patch_size: Sequence[int] | int,
            out_channels: int | None = None,
            spatial_dims: int = 3,
            **arguments: Any,
        ) -> None:
            super().__init__(
                in_channels=in_channels,
                img_size=img_size,
                patch_size=patch_size,
                spatial_dims=spatial_dims,
                **arguments,
            )
            *blocks, norm = list(self.blocks)
            self.blocks = nn.Sequential(*blocks)
            self.norm = norm
            self.in_channels = in_channels
            self.out_channels = out_channels or in_channels
            if self.out_channels != in_channels:
                self.decoder_pred = nn.Linear(self.decoder_hidden_size, math.prod(self.patch_size) * self.out_channels)
            self.grid = token_grid(self.img_size, self.patch_size)

        def forward_patches(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
            """Encode the visible tokens only, decode all: ``(patches (N, T, prod(token) * C_out), mask)``."""
            tokens = self.patch_embedding(x)
            batch, total, width = tokens.shape
            if mask.shape != (batch, total) or mask.dtype != torch.bool:
                raise ValueError(
                    f"mask must be a bool tensor of shape {(batch, total)}, got {mask.dtype} {tuple(mask.shape)}"
                )
            visible_counts = (~mask).sum(dim=1)
            if bool((visible_counts != visible_counts[0]).any()):
                raise ValueError(
                    f"every image of a batch must keep the same number of visible tokens, got {visible_counts.tolist()}"
                )
            visible = int(visible_counts[0])
            # Visible tokens first, each group in token order (a stable sort of the mask).
            keep = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)[:, :visible]
            x = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, width))
            x = torch.cat((self.cls_token.expand(batch, -1, -1), x), dim=1)
            x = self.norm(self.blocks(x))

            x = self.decoder_embed(x)
            width = x.shape[-1]
            full = self.mask_tokens.expand(batch, total, width)
            full = torch.scatter(full, 1, keep.unsqueeze(-1).expand(-1, -1, width), x[:, 1:, :])
            full = full + self.decoder_pos_embedding
            x = self.decoder_blocks(torch.cat((x[:, :1, :], full), dim=1))
            return self.decoder_pred(x)[:, 1:, :], mask

        def reconstruct(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
            """The prediction as an image ``(N, out_channels, *spatial)``; no mask = every token visible."""
            if mask is None:
                mask = torch.zeros(x.shape[0], math.prod(self.grid), dtype=torch.bool, device=x.device)
            patches, _mask = self.forward_patches(x, mask)
            return unpatchify(patches, self.img_size, self.patch_size, self.out_channels)

        def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
            """With a mask: ``(patches, mask)`` for the MAE loss. Without: the unmasked image, never a random draw."""
            if mask is None:
                return self.reconstruct(x)
            return self.forward_patches(x, mask)

    MaskedViT.__module__ = __name__
    MaskedViT.__qualname__ = "MaskedViT"
    return MaskedViT


def __getattr__(name: str) -> Any:
    if name == "MaskedViT":
        return _masked_vit_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


VIT_MAE_DEFAULTS: dict[str, Any] = {
    "token_size": 16,
    "hidden_size": 768,
    "mlp_dim": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "decoder_hidden_size": 384,
    "decoder_mlp_dim": 512,
    "decoder_num_layers": 4,
    "decoder_num_heads": 12,
}


@DENSE_NETWORKS.register("vit_mae")
def build_vit_mae(spec: DenseNetworkSpec) -> nn.Module:
    """:class:`MaskedViT` over the training patch, tokens of ``token_size``; encoder keys as MONAI's ``ViT``."""
    options = {**VIT_MAE_DEFAULTS, **vit_options(spec.options)}
    token_size = _per_axis(options.pop("token_size"), spec.spatial_dims)
    token_grid(spec.patch_size, token_size)
    try:
        network = _masked_vit_class()(
            in_channels=spec.in_channels,
            out_channels=spec.out_channels,
            img_size=spec.patch_size,
            patch_size=token_size,
            spatial_dims=spec.spatial_dims,
            **options,
        )
    except (TypeError, ValueError, AssertionError) as error:  # MONAI asserts sin-cos embedding sizes
        raise UserError(f"Dense network 'vit_mae' cannot be built with these options ({error}): check them") from None
    network.encoder_prefixes = ("patch_embedding.", "blocks.", "norm.")
    network.output_layer_prefixes = ("decoder_pred.",)
    return network
