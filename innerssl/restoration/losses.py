"""Restoration losses (BiaPy's choices): L1, MSE, SSIM, and a weighted L1 / MSE + SSIM, 2D and 3D.

SSIM is computed with a Gaussian window that fits the patch (11 pixels, smaller for small patches) over the data
range [0, 1] of the normalised images; its loss is ``1 - SSIM``. Masked losses average over the masked pixels only
(MAE's loss on the masked patches)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

LossName = Literal["l1", "mse", "ssim", "l1_ssim", "mse_ssim"]
LOSS_NAMES: tuple[str, ...] = ("l1", "mse", "ssim", "l1_ssim", "mse_ssim")
SSIM_WINDOW = 11


def ssim_kernel_size(spatial: tuple[int, ...]) -> int:
    """The largest odd window of at most SSIM_WINDOW pixels that fits every spatial axis (at least 3)."""
    size = min(SSIM_WINDOW, *spatial)
    size = size if size % 2 else size - 1
    return max(3, size)


def ssim(prediction: Tensor, target: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean SSIM of ``(N, C, *spatial)`` batches (2D or 3D)."""
    kernel = ssim_kernel_size(tuple(target.shape[2:]))
    value = structural_similarity_index_measure(
        prediction.float(), target.float(), data_range=data_range, kernel_size=kernel
    )
    assert isinstance(value, Tensor)
    return value


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` over the pixels where ``mask`` (broadcastable, bool) is True; all pixels without a mask."""
    if mask is None:
        return values.mean()
    weights = mask.expand_as(values).to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1)


def restoration_loss(name: str, ssim_weight: float = 0.5) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
    """The loss ``(prediction, target, mask or None) -> scalar`` of ``name``; the weighted ones are
    ``(1 - ssim_weight) * L1 (or MSE) + ssim_weight * (1 - SSIM)``. SSIM terms ignore the mask."""

    def pixel(kind: str) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        def loss(prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
            difference = prediction.float() - target.float()
            return masked_mean(difference.abs() if kind == "l1" else difference.square(), mask)

        return loss

    def structural(prediction: Tensor, target: Tensor, _mask: Tensor | None) -> Tensor:
        return 1 - ssim(prediction, target)

    if name in ("l1", "mse"):
        return pixel(name)
    if name == "ssim":
        return structural
    if name in ("l1_ssim", "mse_ssim"):
        first = pixel(name.split("_")[0])

        def weighted(prediction: Tensor, target: Tensor, mask: Tensor | None) -> Tensor:
            return (1 - ssim_weight) * first(prediction, target, mask) + ssim_weight * structural(
                prediction, target, mask
            )

        return weighted
    raise ValueError(f"Unknown restoration loss {name}; known: {', '.join(LOSS_NAMES)}")
