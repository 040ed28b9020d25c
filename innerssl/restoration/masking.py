"""BiaPy's masking pretext task: a masked autoencoder ViT (2D and 3D) reconstructs the image from a subset of its
tokens; the loss is the MSE on the masked tokens only.

Masks (``--mae_mask_type``): ``random`` hides ``--mae_mask_ratio`` of the tokens of each image (BiaPy 0.5, the MAE
paper 0.75), drawn anew every step; ``grid`` is BiaPy's checkerboard (every other token), the same every time.
The encoder sees only the visible tokens (the network is :class:`innerssl.networks.masked_vit.MaskedViT`).

Whole images are cut into non-overlapping tiles of the training patch (the ViT's fixed input size; the image is
reflection-padded at its end to whole tiles and the result cropped back), each tile masked as in training with a
generator seeded by the image's index, so validation compares like with like across epochs. The baseline is the
mean-filled image: masked pixels replaced by the per-channel mean of the visible ones. Metrics count the masked
pixels only.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from innerssl.data.tiling import extract_patches, reflect_pad
from innerssl.errors import UserError
from innerssl.networks.masked_vit import grid_token_mask, mask_to_pixels, random_token_mask, token_grid
from innerssl.restoration.losses import masked_mean
from innerssl.restoration.registry import PretextTask, Restoration, TileFunction, register_task, seeded_generator


def network_token_size(network: nn.Module) -> tuple[int, ...]:
    """The token (ViT patch) size per spatial axis of a masked ViT built from a dense-network spec."""
    spec = network.spec
    size: Any = spec.options.get("token_size", 16)
    return tuple(size) if isinstance(size, Sequence) else (int(size),) * spec.spatial_dims


def mean_fill(image: Tensor, pixel_mask: Tensor) -> Tensor:
    """``image`` ``(C, *spatial)`` with the masked pixels (``pixel_mask`` ``(1, *spatial)``) set to the per-channel
    mean of the visible ones."""
    visible = (~pixel_mask).to(image.dtype)
    flat_image, flat_visible = image.flatten(1), visible.flatten(1)
    means = (flat_image * flat_visible).sum(1) / flat_visible.sum(1).clamp(min=1)
    shape = (-1,) + (1,) * (image.dim() - 1)
    return torch.where(pixel_mask, means.view(shape), image)


@register_task
class Masking(PretextTask):
    task_name: ClassVar[str] = "masking"
    flag_prefix: ClassVar[str] = "mae"
    default_network: ClassVar[str] = "vit_mae"
    token_networks: ClassVar[bool] = True
    baseline_name: ClassVar[str] = "mean_fill"
    parameter_docs: ClassVar[dict[str, str]] = {
        "mask_type": "random: a new random set of tokens per image and step; grid: BiaPy's checkerboard of tokens.",
        "mask_ratio": "Fraction of tokens masked with --mae_mask_type=random (BiaPy 0.5, the MAE paper 0.75); the "
        "grid masks half of them.",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {"mask_ratio": (0.01, 0.99)}

    def __init__(self, mask_type: Literal["random", "grid"] = "random", mask_ratio: float = 0.5) -> None:
        super().__init__()
        if mask_type not in ("random", "grid"):
            raise UserError(f"--mae_mask_type={mask_type} is not a mask type: use random or grid")
        self.mask_type = mask_type
        self.mask_ratio = mask_ratio

    def token_mask(
        self, batch: int, grid: tuple[int, ...], device: torch.device, generator: torch.Generator | None = None
    ) -> Tensor:
        if self.mask_type == "grid":
            return grid_token_mask(batch, grid, device=device)
        return random_token_mask(batch, grid, self.mask_ratio, generator=generator, device=device)

    def reconstruct(
        self, network: nn.Module, images: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """(reconstruction ``(N, C, *spatial)``, pixel mask ``(N, 1, *spatial)``) of a batch of patches."""
        spatial = tuple(images.shape[2:])
        token_size = network_token_size(network)
        grid = token_grid(spatial, token_size)
        mask = self.token_mask(images.shape[0], grid, images.device, generator)
        reconstruction = network.reconstruct(images, mask)
        return reconstruction, mask_to_pixels(mask, spatial, token_size)

    def training_pair(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        reconstruction, pixel_mask = self.reconstruct(network, images, generator)
        return reconstruction, images if targets is None else targets, pixel_mask

    def preview_inputs(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        spatial = tuple(images.shape[2:])
        token_size = network_token_size(network)
        mask = self.token_mask(images.shape[0], token_grid(spatial, token_size), images.device, generator)
        pixels = mask_to_pixels(mask, spatial, token_size)
        return torch.stack([mean_fill(image, pixel) for image, pixel in zip(images, pixels)]), images

    def objective(self, prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return masked_mean((prediction.float() - target.float()).square(), mask)

    def restore(
        self, network: nn.Module, image: Tensor, target: Tensor | None, index: int, tiles: TileFunction
    ) -> Restoration:
        original = image if target is None else target
        patch = tuple(int(size) for size in network.spec.patch_size)
        spatial = tuple(image.shape[1:])
        counts = [-(-size // tile) for size, tile in zip(spatial, patch)]
        padded = reflect_pad(image, [0] * len(spatial), [n * p - s for n, p, s in zip(counts, patch, spatial)])
        origins = [tuple(i * p for i, p in zip(position, patch)) for position in itertools.product(*map(range, counts))]
        generator = seeded_generator(index, image.device)
        restored = torch.empty_like(padded)
        pixel_mask = torch.zeros((1, *padded.shape[1:]), dtype=torch.bool, device=image.device)
        for origin in origins:
            tile = extract_patches(padded, [origin], patch)
            with torch.no_grad():
                reconstruction, tile_mask = self.reconstruct(network, tile, generator)
            where = (slice(None),) + tuple(slice(o, o + p) for o, p in zip(origin, patch))
            restored[where] = reconstruction[0].to(restored.dtype)
            pixel_mask[where] = tile_mask[0]
        crop = (slice(None),) + tuple(slice(0, size) for size in spatial)
        reconstruction, pixel_mask = restored[crop], pixel_mask[crop]
        # What a viewer compares: the reconstruction where masked, the original where visible.
        restored = torch.where(pixel_mask, reconstruction, original)
        filled = mean_fill(original, pixel_mask)
        return Restoration(original, filled, restored, baseline=filled, mask=pixel_mask, reconstruction=reconstruction)
