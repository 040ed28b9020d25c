"""The augmentation config as a torchvision v2 pipeline applied to one image at a time (CPU workers).

Input: a float32 tensor ``(C, H, W)`` in [0, 1] as every dataset returns it (C = 1 or 3); uint8 input
is scaled to [0, 1]. Output: float32, contiguous, ``(in_channels, H', W')`` in [0, 1] (random erasing
writes 0, so the range holds). The steps, each only when switched on:

    preprocess (resize shorter side, center crop) -> random resized crop (back to the preprocessed
    size) -> horizontal flip -> affine -> colour jitter -> gamma -> Gaussian blur -> solarize ->
    elastic -> Gaussian noise -> clamp to [0, 1] -> random erasing -> channel conversion

Geometry first, so intensity changes see the final field of view; noise after every smoothing step
so it stays white; clamp before erasing so erased patches are exactly 0. Channels are converted last
so the intensity transforms work on the image's own channels (a grayscale radiograph gets grayscale
jitter, not three slightly different copies).

An SSL method's views of other sizes (DINO's local crops, :class:`~innerssl.augment.views.ViewGroup`) come from
``build_per_sample_transform(config, in_channels, view_size)``: the random resized crop resizes to the view's
size. :class:`MultiViews` makes all views of one image, group by group.

Every random step draws its own parameters on each call from torch's global generator, so two calls
on the same image differ, ``torch.manual_seed`` makes a sequence of calls reproducible, and the data
loader's per-worker seeding keeps workers independent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from innerssl.augment.config import (
    AugmentationConfig,
    BlurConfig,
    ColorConfig,
    CropConfig,
    ElasticConfig,
    Range,
)
from innerssl.augment.views import view_shape

LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R BT.601 weights of R, G, B in grayscale intensity (what torchvision and PIL use)."""

MIN_BLUR_KERNEL = 3
"""Smallest blur kernel side: a 1-pixel kernel would not blur at all."""

ELASTIC_KERNEL_PER_SIGMA = 8
"""torchvision's ElasticTransform smooths its noise with a kernel of ``int(8 * sigma + 1)`` pixels (made odd)."""


class ToChannels(nn.Module):
    """Convert ``(..., C, H, W)`` images to ``in_channels`` channels, as the encoder expects.

    1 -> n repeats the channel (a grayscale radiograph for an ImageNet-shaped encoder); 3 -> 1 takes
    the luminance; an image that already has ``in_channels`` channels passes unchanged.
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        self.in_channels = in_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        channels = image.shape[-3]
        if channels == self.in_channels:
            return image
        if channels == 1:
            return image.expand(*image.shape[:-3], self.in_channels, *image.shape[-2:])
        if channels == len(LUMINANCE_WEIGHTS) and self.in_channels == 1:
            weights = torch.tensor(LUMINANCE_WEIGHTS, dtype=image.dtype, device=image.device)
            return (image * weights.view(-1, 1, 1)).sum(dim=-3, keepdim=True)
        raise ValueError(f"Cannot convert an image with {channels} channels to {self.in_channels} channels")

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}"


class RandomResizedCropToInput(nn.Module):
    """Random resized crop whose output size is the input's size, or ``view_size`` of it.

    The crop comes after the preprocess step, whose output size depends on the input when only
    ``resize`` is set (shorter side), so the size is read per image; torchvision's own sampler (one
    per distinct size) draws the box. ``view_size``: see :attr:`~innerssl.augment.views.ViewGroup.size`.
    """

    def __init__(self, config: CropConfig, view_size: float | None = None) -> None:
        super().__init__()
        self.scale = config.scale
        self.ratio = config.ratio
        self.view_size = view_size
        self._crops: dict[tuple[int, int], v2.RandomResizedCrop] = {}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = view_shape(self.view_size, int(image.shape[-2]), int(image.shape[-1]))
        crop = self._crops.get(size)
        if crop is None:
            crop = v2.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, antialias=True)
            self._crops[size] = crop
        return crop(image)

    def extra_repr(self) -> str:
        size = "" if self.view_size is None else f", view_size={self.view_size}"
        return f"scale={self.scale}, ratio={self.ratio}{size}"


class ResizeToView(nn.Module):
    """The whole image resized to ``view_size`` (a view group's size where the config has no random crop)."""

    def __init__(self, view_size: float) -> None:
        super().__init__()
        self.view_size = view_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        size = view_shape(self.view_size, int(image.shape[-2]), int(image.shape[-1]))
        if size == tuple(image.shape[-2:]):
            return image
        return F.resize(image, list(size), antialias=True)

    def extra_repr(self) -> str:
        return f"view_size={self.view_size}"


class ChannelAwareColorJitter(nn.Module):
    """Colour jitter that applies saturation and hue to RGB images only.

    Grayscale images have no saturation or hue, so for them only brightness and contrast are drawn;
    one YAML file then serves both 1- and 3-channel datasets.
    """

    def __init__(self, config: ColorConfig) -> None:
        super().__init__()
        self.rgb = v2.ColorJitter(
            brightness=config.brightness,
            contrast=config.contrast,
            saturation=config.saturation,
            hue=config.hue,
        )
        self.gray = v2.ColorJitter(brightness=config.brightness, contrast=config.contrast)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.rgb(image) if image.shape[-3] == len(LUMINANCE_WEIGHTS) else self.gray(image)


class RandomGamma(nn.Module):
    """``x -> x ** gamma`` with gamma drawn uniformly from ``scale``: darkens or brightens mid-tones."""

    def __init__(self, scale: Range) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        gamma = _uniform(self.scale)
        return image.clamp(0.0, 1.0).pow(gamma)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class RandomGaussianBlur(nn.Module):
    """Gaussian blur whose kernel is a fixed fraction of the image size and whose sigma is random."""

    def __init__(self, config: BlurConfig) -> None:
        super().__init__()
        self.kernel_fraction = config.kernel_fraction
        self.sigma = config.sigma

    def kernel_size(self, height: int, width: int) -> int:
        size = max(MIN_BLUR_KERNEL, round(self.kernel_fraction * min(height, width)))
        return size if size % 2 == 1 else size + 1

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        kernel = self.kernel_size(image.shape[-2], image.shape[-1])
        sigma = _uniform(self.sigma)
        return F.gaussian_blur(image, kernel_size=[kernel, kernel], sigma=[sigma, sigma])

    def extra_repr(self) -> str:
        return f"kernel_fraction={self.kernel_fraction}, sigma={self.sigma}"


class GaussianNoise(nn.Module):
    """Add independent N(0, std) noise to every pixel and channel (clamping is a later step)."""

    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image + torch.randn_like(image) * self.std

    def extra_repr(self) -> str:
        return f"std={self.std}"


class Clamp(nn.Module):
    """Keep intensities in [0, 1] after the steps that can leave it (noise)."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.clamp(0.0, 1.0)


class PerSampleTransform(nn.Module):
    """The built pipeline: checks the input, runs the steps, returns contiguous float32."""

    def __init__(self, steps: list[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        super().__init__()
        self.pipeline = v2.Compose(steps)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"Expected an image tensor (C, H, W), got {shape}")
        output = self.pipeline(image)
        return output.to(torch.float32).contiguous()


class MultiViews:
    """Every view an SSL method asks for, of one image: ``count`` independent draws of each group's transform,
    the groups in order (the per-sample counterpart of :meth:`~innerssl.augment.batched.BatchedAugmentation.views`).
    """

    def __init__(self, groups: Sequence[tuple[Callable[[torch.Tensor], torch.Tensor], int]]) -> None:
        self.groups = list(groups)
        """(transform, number of views) per view group."""

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(transform(image) for transform, count in self.groups for _ in range(count))

    def __repr__(self) -> str:
        inner = ", ".join(f"{count} x {transform!r}" for transform, count in self.groups)
        return f"{type(self).__name__}({inner})"


class TwoViews(MultiViews):
    """Two independently augmented views of one image, for contrastive and BYOL-style methods."""

    def __init__(self, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__([(transform, 2)])
        self.transform = transform

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def build_per_sample_transform(
    config: AugmentationConfig, in_channels: int, view_size: float | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The config's pipeline for one ``(C, H, W)`` image; see the module docstring for the order.

    ``view_size`` (see :attr:`~innerssl.augment.views.ViewGroup.size`): the random resized crop resizes to it,
    or without a crop the preprocessed image is resized to it; None keeps the preprocess output size.
    """
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = [v2.ToDtype(torch.float32, scale=True)]
    pre = config.preprocess
    if pre.resize is not None:
        steps.append(v2.Resize(pre.resize, antialias=True))
    if pre.center_crop_size is not None:
        steps.append(v2.CenterCrop(pre.center_crop_size))

    aug = config.augmentation
    if aug.use_random_crop:
        steps.append(RandomResizedCropToInput(aug.random_crop, view_size))
    elif view_size is not None:
        steps.append(ResizeToView(view_size))
    if aug.use_random_horizontal_flip:
        steps.append(v2.RandomHorizontalFlip(p=aug.random_horizontal_flip.prob))
    if aug.use_random_affine:
        affine = aug.random_affine
        steps.append(
            v2.RandomAffine(
                degrees=affine.max_angle,
                translate=(affine.max_horizontal_shift, affine.max_vertical_shift),
                shear=affine.max_shear,
                interpolation=v2.InterpolationMode.BILINEAR,
            )
        )
    if aug.use_random_color:
        steps.append(_sometimes(ChannelAwareColorJitter(aug.random_color), aug.random_color.p_apply))
    if aug.use_gamma_transform:
        steps.append(RandomGamma(aug.gamma.scale))
    if aug.use_gaussian_blur:
        steps.append(_sometimes(RandomGaussianBlur(aug.gaussian_blur), aug.gaussian_blur.p_apply))
    if aug.use_solarize:
        steps.append(v2.RandomSolarize(threshold=aug.solarize.threshold, p=aug.solarize.p_apply))
    if aug.use_elastic_transform:
        steps.append(_sometimes(_elastic(aug.elastic_transform), aug.elastic_transform.p_apply))
    if aug.use_gaussian_noise:
        steps.append(_sometimes(GaussianNoise(aug.gaussian_noise.std), aug.gaussian_noise.p_apply))
    steps.append(Clamp())
    if aug.use_random_erasing:
        erasing = aug.random_erasing
        steps.append(v2.RandomErasing(p=erasing.p_apply, scale=erasing.scale, ratio=erasing.ratio, value=0))
    steps.append(ToChannels(in_channels))
    return PerSampleTransform(steps)


class ElasticTransform(nn.Module):
    """torchvision's ``ElasticTransform`` (the same random numbers, smoothing and displacement), for any image size.

    torchvision smooths the noise with a kernel of ``int(8 sigma + 1)`` pixels and reflect padding, which fails
    on images smaller than half the kernel (small multi-crop views); there the kernel is cut to the largest one
    the padding allows, ``2 * side - 1`` (the batched path's ``smooth_noise`` does the same).
    """

    def __init__(self, config: ElasticConfig) -> None:
        super().__init__()
        self.sigma = config.sigma
        # torchvision scales the smoothed noise by alpha / size in grid units of 2 / size per pixel, so its
        # alpha is twice the displacement in pixels that InnerEye's (Simard's) alpha means.
        self.alpha = 2.0 * config.alpha

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        height, width = int(image.shape[-2]), int(image.shape[-1])
        kernel = int(ELASTIC_KERNEL_PER_SIGMA * self.sigma + 1)
        kernel = min(kernel + 1 - kernel % 2, 2 * min(height, width) - 1)
        fields = []
        for size in (width, height):  # x, then y, as torchvision draws them
            field = torch.rand(1, 1, height, width) * 2 - 1
            if self.sigma > 0.0:
                field = F.gaussian_blur(field, [kernel, kernel], [self.sigma, self.sigma])
            fields.append(field * self.alpha / size)
        displacement = torch.concat(fields, 1).permute([0, 2, 3, 1])  # 1 x H x W x 2
        return F.elastic(image, displacement, interpolation=v2.InterpolationMode.BILINEAR, fill=0)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, sigma={self.sigma}"


def _elastic(config: ElasticConfig) -> ElasticTransform:
    return ElasticTransform(config)


def _sometimes(
    transform: Callable[[torch.Tensor], torch.Tensor], p_apply: float
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply with probability ``p_apply``; no coin is drawn when it is always applied."""
    return transform if p_apply >= 1.0 else v2.RandomApply([transform], p=p_apply)


def _uniform(bounds: Range) -> float:
    low, high = bounds
    return float(torch.empty(()).uniform_(low, high))
