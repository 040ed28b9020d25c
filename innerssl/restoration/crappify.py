"""BiaPy's crappify pretext task: the network maps a noisy, lower-resolution copy of each image back to the image.

The degradation is :func:`innerssl.augment.crappify.crappify` (noise of ``noise`` x the maximum, clip, down- and
up-sampling by ``1/sqrt(resizing_factor)`` per axis). Two sources of degraded inputs (``--crappify_source``):

- ``on_the_fly`` (default): degraded on the training device in every step, with fresh noise each epoch, so the
  network never sees the same noisy copy twice;
- ``on_disk``: BiaPy's way, one degraded copy per image written once to ``<dataset>_ssl_source`` and reused
  (the data module then hands the copies as inputs and the originals as targets).

Validation and test images are degraded once per image, by a generator seeded with the image's index, so every
epoch is measured on the same inputs; the baseline is that degraded input itself.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from innerssl.augment.crappify import RESIZING_FACTORS, crappify
from innerssl.errors import UserError
from innerssl.restoration.losses import LOSS_NAMES, restoration_loss
from innerssl.restoration.registry import PretextTask, Restoration, TileFunction, register_task, seeded_generator


@register_task
class Crappify(PretextTask):
    task_name: ClassVar[str] = "crappify"
    flag_prefix: ClassVar[str] = "crappify"
    default_network: ClassVar[str] = "unet"
    baseline_name: ClassVar[str] = "input"
    input_heading: ClassVar[str] = "crappified"
    needs_unit_range: ClassVar[bool] = True
    parameter_docs: ClassVar[dict[str, str]] = {
        "noise": "Standard deviation of the Gaussian noise, as a fraction of the image maximum (BiaPy: 0.2).",
        "resizing_factor": "Area factor of the lower resolution: every spatial axis (z too) shrinks by "
        "1/sqrt(factor) and is up-sampled back; 2, 4 (BiaPy's default: half size) or 6.",
        "source": "on_the_fly: degrade on the device with fresh noise every step; on_disk: BiaPy's degraded "
        "copies, written once to <dataset_cache_dir>/<dataset>_ssl_source and reused (regenerated when the "
        "images or settings change).",
        "loss": "Restoration loss: l1 (BiaPy's default), mse, ssim (1 - SSIM), or l1_ssim / mse_ssim, weighted by "
        "--crappify_ssim_weight.",
        "ssim_weight": "Weight of the SSIM term in l1_ssim / mse_ssim (the pixel term gets 1 - weight).",
        "residual": "Residual learning (as DnCNN): the restoration is the degraded input plus the network's output, "
        "so training starts from the degraded input instead of from noise (the network's weights, which "
        "segmentation reuses, are the same either way); false: the network's output itself, as BiaPy.",
    }
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "noise": (0.0, None),
        "ssim_weight": (0.0, 1.0),
    }

    def __init__(
        self,
        noise: float = 0.2,
        resizing_factor: int = 4,
        source: Literal["on_the_fly", "on_disk"] = "on_the_fly",
        loss: Literal["l1", "mse", "ssim", "l1_ssim", "mse_ssim"] = "l1",
        ssim_weight: float = 0.5,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if resizing_factor not in RESIZING_FACTORS:
            allowed = ", ".join(str(factor) for factor in RESIZING_FACTORS)
            raise UserError(f"--crappify_resizing_factor={resizing_factor} is not allowed: use one of {allowed}")
        if loss not in LOSS_NAMES:
            raise UserError(f"--crappify_loss={loss} is not a loss: use one of {', '.join(LOSS_NAMES)}")
        self.noise = noise
        self.resizing_factor = resizing_factor
        self.source = source
        self.loss = loss
        self.ssim_weight = ssim_weight
        self.residual = residual
        self._loss = restoration_loss(loss, ssim_weight)

    def degrade(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # BiaPy scales the noise by each image's own maximum (here: each patch's, for patches degraded on the fly).
        return crappify(images, self.noise, self.resizing_factor, generator, maximum=None)

    def training_pair(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        if targets is None:
            inputs, targets = self.degrade(images, generator), images
        else:
            inputs = images
        return self.apply(network, inputs), targets, None

    def prepare_network(self, network: nn.Module) -> None:
        # A residual restoration starts as the identity (the degraded input, the baseline), not as a random map.
        if not self.residual:
            return
        prefixes = tuple(getattr(network, "output_layer_prefixes", ()))
        with torch.no_grad():
            for name, parameter in network.named_parameters():
                if prefixes and name.startswith(prefixes):
                    parameter.zero_()

    def apply(self, network: nn.Module, inputs: Tensor) -> Tensor:
        """The restoration of ``inputs``: the network's output, plus the input itself with ``residual``."""
        output = network(inputs)
        return inputs + output if self.residual else output

    def preview_inputs(
        self, network: nn.Module, images: Tensor, targets: Tensor | None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        if targets is None:
            return self.degrade(images, generator), images
        return images, targets

    def objective(self, prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
        return self._loss(prediction, target, mask)

    def restore(
        self, network: nn.Module, image: Tensor, target: Tensor | None, index: int, tiles: TileFunction
    ) -> Restoration:
        if target is None:
            degraded = self.degrade(image[None], seeded_generator(index, image.device))[0]
            original = image
        else:
            degraded, original = image, target
        restored = tiles(degraded, lambda batch: self.apply(network, batch))
        return Restoration(original, degraded, restored, baseline=degraded)
