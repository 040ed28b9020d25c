"""MONAI's self-supervised pretraining recipe (Project-MONAI/tutorials, ``self_supervised_pretraining``): a
ViTAutoEnc reconstructs images damaged by in- or out-painting and local pixel shuffling, trained with an L1
reconstruction loss plus a contrastive loss between the reconstructions of two views of each image.

Followed from the tutorial's ``ssl_script_train.py`` (the transforms and the loss, not its data pipeline):

- each view is ``OneOf([inpainting, outpainting])`` with equal weights (``--autoenc_outpainting_prob``), then
  local pixel shuffling: inpainting is ``RandCoarseDropout(holes=6, spatial_size=5, max_spatial_size=32,
  dropout_holes=True, prob=1)``, outpainting ``RandCoarseDropout(holes=6, spatial_size=20, max_spatial_size=64,
  dropout_holes=False, prob=1)`` (everything outside the holes is filled), shuffling
  ``RandCoarseShuffle(holes=10, spatial_size=8, prob=0.8)``; fills are MONAI's default (uniform between the
  image's minimum and maximum). MONAI's array transforms are used, drawing from a numpy ``RandomState`` seeded
  from torch's generator, on the CPU;
- the two views of an image get separate draws (MONAI tutorials#467 was both views damaged identically);
- loss: ``r = L1(recon(view 1), original)``, ``c = ContrastiveLoss(temperature=0.05)(recon(view 1).flatten(1),
  recon(view 2).flatten(1))`` and ``total = r + c * r``; 0.05 is the tutorial code's temperature (its README says
  0.005). The tutorial trains with Adam at 1e-4 (the configs' learning rate).

The tutorial crops 96^3 voxel ROIs; hole sizes here are scaled by ``min(patch side) / --autoenc_reference_roi``
(rounded, at least 1 voxel), so the holes cover the same fraction of a smaller patch (a 32^3 patch gets 2-11
voxel inpainting holes, 7-21 voxel outpainting windows, 3 voxel shuffles) instead of being wiped out by 20-64
voxel windows. Hole counts are not scaled.

Validation and test images get view 1 only, drawn from a generator seeded with the image's index (the same at
every evaluation); the baseline is that damaged view and the metrics count every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from innerssl.errors import UserError
from innerssl.networks.vit_autoenc import build_vit_autoenc  # noqa: F401  (registers the vit_autoenc network)
from innerssl.restoration.registry import PretextTask, Restoration, TileFunction, register_task, seeded_generator

SEED_BOUND = 2**31 - 1


@dataclass(frozen=True)
class HoleSizes:
    """The hole sizes (voxels per axis, the same on every axis) after scaling to the patch."""

    spatial_size: int
    max_spatial_size: int
    outpainting_spatial_size: int
    outpainting_max_spatial_size: int
    shuffle_spatial_size: int


def numpy_state(generator: torch.Generator | None) -> np.random.RandomState:
    """A numpy RandomState for MONAI's transforms, seeded from ``generator`` (None: torch's global RNG), so runs
    seeded through torch are reproducible."""
    device = generator.device if generator is not None else torch.device("cpu")
    seed = int(torch.randint(0, SEED_BOUND, (1,), generator=generator, device=device).item())
    return np.random.RandomState(seed)


@register_task
class ViTAutoEncSSL(PretextTask):
    task_name: ClassVar[str] = "vit_autoenc"
    flag_prefix: ClassVar[str] = "autoenc"
    default_network: ClassVar[str] = "vit_autoenc"
    baseline_name: ClassVar[str] = "input"
    input_heading: ClassVar[str] = "view 1"
    token_networks: ClassVar[bool] = False
    parameter_docs: ClassVar[dict[str, str]] = {
        "holes": "Inpainting: number of holes filled with random values (the tutorial: 6).",
        "spatial_size": "Inpainting: smallest hole side at --autoenc_reference_roi voxels (the tutorial: 5), "
        "scaled to the patch.",
        "max_spatial_size": "Inpainting: largest hole side at --autoenc_reference_roi voxels (the tutorial: 32), "
        "scaled to the patch.",
        "dropout_holes": "Inpainting fills the holes (true, the tutorial); false fills everything outside them.",
        "outpainting_holes": "Outpainting: number of kept windows, everything else filled (the tutorial: 6).",
        "outpainting_spatial_size": "Outpainting: smallest window side at --autoenc_reference_roi voxels (the "
        "tutorial: 20), scaled to the patch.",
        "outpainting_max_spatial_size": "Outpainting: largest window side at --autoenc_reference_roi voxels (the "
        "tutorial: 64), scaled to the patch.",
        "outpainting_prob": "Probability that a view is out- rather than in-painted (the tutorial's OneOf: 0.5).",
        "shuffle_holes": "Local pixel shuffle: number of regions whose voxels are shuffled (the tutorial: 10).",
        "shuffle_spatial_size": "Local pixel shuffle: region side at --autoenc_reference_roi voxels (the "
        "tutorial: 8), scaled to the patch.",
        "shuffle_prob": "Probability that a view is pixel-shuffled after the painting (the tutorial: 0.8).",
        "temperature": "Temperature of the contrastive loss between the two views' reconstructions (the tutorial "
        "code: 0.05; its README says 0.005).",
        "reference_roi": "The ROI side the hole sizes are given for (the tutorial's 96^3 crops): every hole size "
        "is multiplied by min(patch side) / this, rounded, at least 1.",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "holes": (1, None),
        "spatial_size": (1, None),
        "max_spatial_size": (1, None),
        "outpainting_holes": (1, None),
        "outpainting_spatial_size": (1, None),
        "outpainting_max_spatial_size": (1, None),
        "outpainting_prob": (0.0, 1.0),
        "shuffle_holes": (1, None),
        "shuffle_spatial_size": (1, None),
        "shuffle_prob": (0.0, 1.0),
        "temperature": (1e-6, None),
        "reference_roi": (1, None),
    }

    def __init__(
        self,
        holes: int = 6,
        spatial_size: int = 5,
        max_spatial_size: int = 32,
        dropout_holes: bool = True,
        outpainting_holes: int = 6,
        outpainting_spatial_size: int = 20,
        outpainting_max_spatial_size: int = 64,
        outpainting_prob: float = 0.5,
        shuffle_holes: int = 10,
        shuffle_spatial_size: int = 8,
        shuffle_prob: float = 0.8,
        temperature: float = 0.05,
        reference_roi: int = 96,
    ) -> None:
        super().__init__()
        for name, value in (
            ("holes", holes),
            ("spatial_size", spatial_size),
            ("outpainting_holes", outpainting_holes),
            ("outpainting_spatial_size", outpainting_spatial_size),
            ("shuffle_holes", shuffle_holes),
            ("shuffle_spatial_size", shuffle_spatial_size),
            ("reference_roi", reference_roi),
        ):
            if value < 1:
                raise UserError(f"--autoenc_{name}={value} must be at least 1")
        for smallest, largest, low, high in (
            ("spatial_size", "max_spatial_size", spatial_size, max_spatial_size),
            (
                "outpainting_spatial_size",
                "outpainting_max_spatial_size",
                outpainting_spatial_size,
                outpainting_max_spatial_size,
            ),
        ):
            if high < low:
                raise UserError(f"--autoenc_{largest}={high} is smaller than --autoenc_{smallest}={low}: raise it")
        for name, value in (("outpainting_prob", outpainting_prob), ("shuffle_prob", shuffle_prob)):
            if not 0 <= value <= 1:
                raise UserError(f"--autoenc_{name}={value} is a probability: give a value in [0, 1]")
        if temperature <= 0:
            raise UserError(f"--autoenc_temperature={temperature} must be positive (the tutorial: 0.05)")
        self.holes = holes
        self.spatial_size = spatial_size
        self.max_spatial_size = max_spatial_size
        self.dropout_holes = dropout_holes
        self.outpainting_holes = outpainting_holes
        self.outpainting_spatial_size = outpainting_spatial_size
        self.outpainting_max_spatial_size = outpainting_max_spatial_size
        self.outpainting_prob = outpainting_prob
        self.shuffle_holes = shuffle_holes
        self.shuffle_spatial_size = shuffle_spatial_size
        self.shuffle_prob = shuffle_prob
        self.temperature = temperature
        self.reference_roi = reference_roi
        self._contrastive: nn.Module | None = None

    # --- the damage -------------------------------------------------------------------------------------
    def hole_sizes(self, patch: tuple[int, ...]) -> HoleSizes:
        """The tutorial's sizes scaled by ``min(patch) / reference_roi`` (rounded, at least 1)."""
        scale = min(patch) / self.reference_roi

        def scaled(size: int) -> int:
            return max(1, round(size * scale))

        return HoleSizes(
            scaled(self.spatial_size),
            scaled(self.max_spatial_size),
            scaled(self.outpainting_spatial_size),
            scaled(self.outpainting_max_spatial_size),
            scaled(self.shuffle_spatial_size),
        )

    def check_patch(self, patch: tuple[int, ...]) -> HoleSizes:
        """The scaled sizes, refusing a patch on which a hole or window cannot fit."""
        sizes = self.hole_sizes(patch)
        smallest = max(sizes.spatial_size, sizes.outpainting_spatial_size, sizes.shuffle_spatial_size)
        if smallest > min(patch):
            raise UserError(
                f"--patch_size {tuple(patch)} is smaller than the scaled holes ({smallest} voxels) of "
                f"--pretext_task=vit_autoenc: lower the hole sizes or raise --autoenc_reference_roi"
            )
        return sizes

    def view(self, image: Tensor, state: np.random.RandomState, patch: tuple[int, ...] | None = None) -> Tensor:
        """One damaged view of ``image`` ``(C, *spatial)`` (in- or out-painting, then maybe a local pixel shuffle),
        drawn from ``state`` on the CPU; hole sizes are scaled to ``patch`` (default: the image's size)."""
        from monai.transforms import RandCoarseDropout, RandCoarseShuffle
        from monai.utils import convert_to_tensor

        sizes = self.check_patch(tuple(image.shape[1:]) if patch is None else tuple(patch))
        if state.rand() < self.outpainting_prob:
            painting = RandCoarseDropout(
                holes=self.outpainting_holes,
                spatial_size=sizes.outpainting_spatial_size,
                max_spatial_size=sizes.outpainting_max_spatial_size,
                dropout_holes=False,
                prob=1.0,
            )
        else:
            painting = RandCoarseDropout(
                holes=self.holes,
                spatial_size=sizes.spatial_size,
                max_spatial_size=sizes.max_spatial_size,
                dropout_holes=self.dropout_holes,
                prob=1.0,
            )
        shuffle = RandCoarseShuffle(
            holes=self.shuffle_holes, spatial_size=sizes.shuffle_spatial_size, prob=self.shuffle_prob
        )
        painting.set_random_state(state=state)
        shuffle.set_random_state(state=state)
        # MONAI's transforms write into their input: damage a copy, never the caller's image.
        damaged = shuffle(painting(image.detach().to("cpu", torch.float32, copy=True)))
        return convert_to_tensor(damaged, track_meta=False).to(image.device, image.dtype)

    def two_views(
        self, images: Tensor, generator: torch.Generator | None = None, patch: tuple[int, ...] | None = None
    ) -> tuple[Tensor, Tensor]:
        """Two views of every image of the batch ``(N, C, *spatial)``, each with its own draws."""
        state = numpy_state(generator)
        pairs = [(self.view(image, state, patch), self.view(image, state, patch)) for image in images]
        return torch.stack([first for first, _ in pairs]), torch.stack([second for _, second in pairs])

    def first_views(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        state = numpy_state(generator)
        return torch.stack([self.view(image, state) for image in images])

    # --- the interface ----------------------------------------------------------------------------------
    def prepare_network(self, network: nn.Module) -> None:
        # The run's first chance to see the patch: refuse it here rather than at the first training step.
        spec: Any = getattr(network, "spec", None)
        if spec is not None and spec.patch_size:
            self.check_patch(tuple(spec.patch_size))

    def contrastive(self) -> nn.Module:
        if self._contrastive is None:
            from monai.losses import ContrastiveLoss

            self._contrastive = ContrastiveLoss(temperature=self.temperature)
        return self._contrastive

    def training_loss(self, network: nn.Module, images: Tensor, targets: Tensor | None) -> Tensor:
        """The tutorial's ``r + c * r`` over two separately drawn views of each image."""
        originals = images if targets is None else targets
        first, second = self.two_views(originals)
        reconstruction, other = network(first), network(second)
        return self.combined_loss(reconstruction, other, originals)

    def combined_loss(self, reconstruction: Tensor, other: Tensor, originals: Tensor) -> Tensor:
        """``L1(view 1's reconstruction, original) * (1 + contrastive(view 1's, view 2's reconstructions))``."""
        r_loss = self.objective(reconstruction, originals, None)
        cl_loss = self.contrastive()(reconstruction.float().flatten(1), other.float().flatten(1))
        return r_loss + cl_loss * r_loss

    def training_pair(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        originals = images if targets is None else targets
        return network(self.first_views(originals, generator)), originals, None

    def preview_inputs(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        originals = images if targets is None else targets
        return self.first_views(originals, generator), originals

    def objective(self, prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return torch.nn.functional.l1_loss(prediction.float(), target.float())

    def restore(
        self, network: nn.Module, image: Tensor, target: Tensor | None, index: int, tiles: TileFunction
    ) -> Restoration:
        original = image if target is None else target
        spec: Any = getattr(network, "spec", None)
        patch = tuple(spec.patch_size) if spec is not None and spec.patch_size else None
        generator = seeded_generator(index, torch.device("cpu"))
        damaged = self.view(image, numpy_state(generator), patch)
        restored = tiles(damaged, network)
        return Restoration(original, damaged, restored, baseline=damaged)
