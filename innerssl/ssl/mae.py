"""MAE: masked autoencoders (He et al., 2021) on timm Vision Transformers, for 2D images.

A random ``mask_ratio`` of each image's patches is dropped; the ViT encoder sees only the visible patches (and its
class/register tokens), a small transformer decoder gets the encoded tokens with a learned mask token in every
dropped position (plus fixed 2D sine-cosine position embeddings) and predicts the pixels of every patch. The loss
is the mean squared error on the masked patches only; with ``norm_pix_loss`` the targets are the patches
normalised by their own mean and variance, as in the paper. Built from lightly's ``MaskedVisionTransformerTIMM``
(encoder side, sharing the ViT in ``self.encoder``) and ``MaskedVisionTransformerDecoderTIMM``.

The ViT's position embeddings become the paper's fixed sine-cosine ones (not trained; starting weights such as
``--encoder_weights=imagenet`` replace them, and they stay fixed), and its layers get the paper's (xavier)
initialisation. ``self.encoder`` is the embedding encoder: monitors and the classifier see the
full, unmasked images through it. Every ``checks_every_n_epochs`` the run folder gets ``mae_checks/`` images
(innerssl.outputs.mae_checks) of a few validation images, their masks and reconstructions.

Differences from the paper: the augmentations are the run's SSL augmentation config (the paper uses only random
resized crops and flips); the validation loss draws new random masks every batch, as training does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, NamedTuple

import pytorch_lightning as pl
import torch
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.nn import functional

from innerssl.augment.views import ViewGroup
from innerssl.errors import UserError
from innerssl.outputs.mae_checks import MAEChecks
from innerssl.ssl.base import SSLModule
from innerssl.ssl.registry import register_method

NORM_PIX_EPS = 1e-6
"""Added to a patch's variance before normalising it (the paper's)."""
ONE_VIEW: tuple[ViewGroup, ...] = (ViewGroup(1),)
"""MAE trains on one view per image: the masking is its augmentation."""


class Reconstruction(NamedTuple):
    """``reconstruct``'s images, all (N, C, H, W) in the input's value range, and where the patches were masked."""

    masked: torch.Tensor
    """The input with its masked patches set to the image's mean (per channel)."""
    reconstruction: torch.Tensor
    """The decoder's prediction of every patch (un-normalised with each patch's own mean and variance)."""
    pasted: torch.Tensor
    """The reconstruction with the visible patches of the input pasted back (exactly the input there)."""
    mask: torch.Tensor
    """(N, 1, H, W) bool: True on the pixels of masked patches."""


class MAEDecoder(nn.Module):
    """Encoded visible tokens to pixel predictions of every patch: embedding, lightly's ViT decoder, prediction.

    One module so that ``torch.compile`` (innerssl.compile) compiles the whole decoder path.
    """

    def __init__(
        self,
        num_patches: int,
        num_prefix_tokens: int,
        encoder_dim: int,
        decoder_dim: int,
        depth: int,
        num_heads: int,
        patch_pixels: int,
    ) -> None:
        super().__init__()
        self.num_prefix_tokens = num_prefix_tokens
        self.embed = nn.Linear(encoder_dim, decoder_dim)
        self.transformer = MaskedVisionTransformerDecoderTIMM(
            num_patches=num_patches,
            embed_dim=decoder_dim,
            depth=depth,
            num_heads=num_heads,
            num_prefix_tokens=num_prefix_tokens,
        )
        self.to_pixels = nn.Linear(decoder_dim, patch_pixels)
        self.embed.apply(init_weights)
        self.to_pixels.apply(init_weights)

    def forward(self, encoded: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """(N, L, patch_pixels) predictions from the encoder's tokens at ``idx_keep`` (prefix tokens included)."""
        tokens = self.embed(encoded)
        sequence = utils.repeat_token(self.transformer.mask_token, (tokens.shape[0], self.transformer.sequence_length))
        sequence = utils.set_at_index(sequence, idx_keep, tokens.type_as(sequence))
        decoded = self.transformer(sequence)
        return self.to_pixels(decoded[:, self.num_prefix_tokens :])


@register_method
class MAE(SSLModule):
    method_name = "MAE"
    flag_prefix = "mae"
    encoder_layouts = ("tokens",)
    parameter_docs: ClassVar[dict[str, str]] = {
        "mask_ratio": "fraction of each image's patches hidden from the encoder and reconstructed (the paper: 0.75)",
        "decoder_dim": "width of the decoder transformer (the paper: 512), divisible by --mae_decoder_num_heads",
        "decoder_depth": "transformer blocks of the decoder (the paper: 8; 1-2 suffice for small runs)",
        "decoder_num_heads": "attention heads of the decoder blocks (the paper: 16)",
        "norm_pix_loss": "reconstruct each patch normalised by its own mean and variance (the paper's better "
        "representations); false: raw pixel values",
        "checks_every_n_epochs": "write mae_checks/epoch_<NNN>.png (validation images, masks, reconstructions) every "
        "this many epochs and at the last; 0: never",
        "checks_num_images": "validation images in each mae_checks picture",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "mask_ratio": (0.0, 1.0),
        "decoder_dim": (1, None),
        "decoder_depth": (1, None),
        "decoder_num_heads": (1, None),
        "checks_every_n_epochs": (0, None),
        "checks_num_images": (1, None),
    }

    @classmethod
    def check_encoder(cls, encoder: nn.Module, hyperparameters: Mapping[str, Any]) -> None:
        vit = vision_transformer_of(encoder, hyperparameters["encoder_name"])  # names the fix, unlike the layout check
        super().check_encoder(encoder, hyperparameters)
        decoder_dim, decoder_num_heads = hyperparameters["decoder_dim"], hyperparameters["decoder_num_heads"]
        if decoder_dim % decoder_num_heads:
            raise UserError(
                f"--mae_decoder_dim={decoder_dim} must be divisible by --mae_decoder_num_heads={decoder_num_heads}"
            )
        _patch_size, grid = patch_grid(vit)
        num_patches = grid * grid
        mask_ratio = hyperparameters["mask_ratio"]
        num_keep = int(num_patches * (1 - mask_ratio))
        if not 1 <= num_keep < num_patches:
            raise UserError(
                f"--mae_mask_ratio={mask_ratio:g} leaves {num_keep} of {num_patches} patches visible: choose a ratio "
                "that masks some patches and keeps at least one"
            )

    def __init__(
        self,
        mask_ratio: float = 0.75,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        norm_pix_loss: bool = True,
        checks_every_n_epochs: int = 5,
        checks_num_images: int = 4,
        **base_arguments: Any,
    ) -> None:
        super().__init__(**base_arguments)
        vit = vision_transformer_of(self.encoder, self.hparams.encoder_name)  # check_encoder has accepted it
        self.patch_size, grid = patch_grid(vit)
        self.image_side = grid * self.patch_size
        self.num_patches = grid * grid
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.num_keep = int(self.num_patches * (1 - mask_ratio))
        # Not a child module: the ViT stays under self.encoder alone (one set of state_dict keys, the classifier's).
        # The wrapper's own mask token is never used (MAE drops the masked patches instead of replacing them).
        self.__dict__["masked_vit"] = MaskedVisionTransformerTIMM(vit=vit)
        self.decoder = MAEDecoder(
            num_patches=self.num_patches,
            num_prefix_tokens=self.num_prefix_tokens,
            encoder_dim=int(vit.embed_dim),
            decoder_dim=decoder_dim,
            depth=decoder_depth,
            num_heads=decoder_num_heads,
            patch_pixels=self.patch_size**2 * self.hparams.in_channels,
        )

    @classmethod
    def view_groups(cls, hyperparameters: Mapping[str, Any] | None = None) -> tuple[ViewGroup, ...]:
        """One view of the augmentation config's size."""
        return ONE_VIEW

    def configure_callbacks(self) -> list[pl.Callback]:
        """The mae_checks pictures (no container change needed: Lightning adds a module's own callbacks)."""
        every = int(self.hparams.checks_every_n_epochs)
        return [MAEChecks(every, int(self.hparams.checks_num_images))] if every > 0 else []

    def mask_indices(
        self, batch_size: int, device: torch.device, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(idx_keep, idx_mask): patch indices (0..L-1) of the visible and the masked patches of each image.

        ``generator`` (a CPU generator) draws a reproducible mask, e.g. the same one at every mae_checks epoch.
        """
        if generator is None:
            return utils.random_token_mask(
                (batch_size, self.num_patches), self.hparams.mask_ratio, mask_class_token=True, device=device
            )
        order = torch.rand(batch_size, self.num_patches, generator=generator).argsort(dim=1).to(device)
        return order[:, : self.num_keep], order[:, self.num_keep :]

    def predict(self, images: torch.Tensor, idx_keep: torch.Tensor) -> torch.Tensor:
        """(N, L, C * patch_size**2) predictions of every patch, the encoder seeing only the patches at ``idx_keep``."""
        batch_size = images.shape[0]
        prefix = torch.arange(self.num_prefix_tokens, device=images.device).expand(batch_size, -1)
        sequence_keep = torch.cat([prefix, idx_keep + self.num_prefix_tokens], dim=1)
        encoded = self.masked_vit.encode(images, idx_keep=sequence_keep)
        return self.decoder(encoded, sequence_keep)

    def patches(self, images: torch.Tensor) -> torch.Tensor:
        """(N, L, C * patch_size**2) pixels of each patch, in the order the predictions use."""
        return utils.patchify(images, self.patch_size)

    def targets(self, images: torch.Tensor) -> torch.Tensor:
        """What the decoder learns to predict: the patches, normalised per patch with ``norm_pix_loss``."""
        patches = self.patches(images)
        if self.hparams.norm_pix_loss:
            return utils.normalize_mean_var(patches, dim=-1, eps=NORM_PIX_EPS)
        return patches

    @staticmethod
    def masked_patch_loss(predictions: torch.Tensor, targets: torch.Tensor, idx_mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the masked patches only: the visible ones would be copying, not learning."""
        masked_predictions = utils.get_at_index(predictions, idx_mask)
        return functional.mse_loss(masked_predictions.float(), utils.get_at_index(targets, idx_mask).float())

    def check_view_size(self, images: torch.Tensor) -> None:
        """A view of another size than the ViT's would fail deep in timm (or get wrong position embeddings)."""
        height, width = images.shape[-2:]
        if height != self.image_side or width != self.image_side:
            raise UserError(
                f"MAE views are {height}x{width} px but the ViT takes {self.image_side}x{self.image_side}: set "
                f"--encoder_options=img_size={height},patch_size={self.patch_size} (square views, a multiple of the "
                "patch size) or change the augmentation config's size"
            )

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        (images,) = self.checked_views(views)
        self.check_view_size(images)
        idx_keep, idx_mask = self.mask_indices(images.shape[0], images.device)
        return self.masked_patch_loss(self.predict(images, idx_keep), self.targets(images), idx_mask)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None) -> Reconstruction:
        """The masked input, the reconstruction and the reconstruction with the visible patches pasted back, in
        image space (norm-pix predictions un-normalised with each original patch's mean and variance)."""
        self.check_view_size(images)
        batch_size, channels = images.shape[:2]
        idx_keep, _idx_mask = self.mask_indices(batch_size, images.device, generator)
        predictions = self.predict(images, idx_keep).float()
        patches = self.patches(images.float())
        if self.hparams.norm_pix_loss:
            mean = patches.mean(dim=-1, keepdim=True)
            variance = patches.var(dim=-1, keepdim=True)
            predictions = predictions * (variance + NORM_PIX_EPS).sqrt() + mean
        visible = utils.get_at_index(patches, idx_keep)
        channel_means = images.float().mean(dim=(2, 3))  # (N, C); a patch's pixels are laid out channel-last
        fill = channel_means.repeat(1, self.patch_size**2).unsqueeze(1).expand_as(patches)
        hidden = torch.ones_like(patches[..., :1])
        hidden = utils.set_at_index(hidden, idx_keep, torch.zeros_like(visible[..., :1]))

        def image(patch_values: torch.Tensor) -> torch.Tensor:
            return utils.unpatchify(patch_values, self.patch_size, channels)

        return Reconstruction(
            masked=image(utils.set_at_index(fill, idx_keep, visible)),
            reconstruction=image(predictions),
            pasted=image(utils.set_at_index(predictions, idx_keep, visible)),
            mask=image(hidden.expand_as(patches))[:, :1] > 0.5,
        )


def vision_transformer_of(encoder: nn.Module, encoder_name: str) -> VisionTransformer:
    """The timm VisionTransformer inside ``encoder``; MAE masks patch tokens, which only a ViT has."""
    model = getattr(encoder, "model", None)
    if not isinstance(model, VisionTransformer):
        raise UserError(
            f"MAE needs a timm ViT encoder, got --ssl_encoder={encoder_name}: use --ssl_encoder=timm:vit_... "
            "(e.g. timm:vit_tiny_patch16_224 with --encoder_options=img_size=64,patch_size=8 for 64 px images)"
        )
    return model


def patch_grid(vit: VisionTransformer) -> tuple[int, int]:
    """(patch side, patches per side) of a ViT with square patches and a square patch grid, else a UserError."""
    return square(vit.patch_embed.patch_size, "patch_size"), square(vit.patch_embed.grid_size, "img_size")


def square(size: int | tuple[int, ...], option: str) -> int:
    """The side of a square patch or patch grid; MAE's patchify takes square images and patches."""
    sides = (size, size) if isinstance(size, int) else tuple(size)
    if len(set(sides)) != 1:
        shown = "x".join(map(str, sides))
        raise UserError(f"MAE needs a square ViT {option}, got {shown}: set --encoder_options={option}=N (one number)")
    return int(sides[0])
