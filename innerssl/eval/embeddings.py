"""Embed a labeled dataset once with a frozen encoder: the input of linear probes and kNN classifiers.

A dataset is read in order, through an augmentation stream's loader dataset (the eval preprocess for a
probe's or kNN's bank, the training augmentation for optional augmented passes), and every image goes
through the encoder once, in eval mode under ``no_grad``. Under DDP each process embeds every
``world_size``-th image (the kNN monitor's sharding: :func:`innerssl.eval.knn.shard_indices`, no padding
duplicates) and the shares are gathered (:func:`innerssl.eval.knn.gather_shards`), so every process ends
with the embeddings of every image exactly once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.knn import Gather, gather_shards, shard_indices
from innerssl.eval.online_linear import frozen_eval_mode

EmbedImages = Callable[[torch.Tensor], torch.Tensor]
"""Images on the device (the encoder's input) -> (B, D) embeddings."""
AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@dataclass(frozen=True)
class Embedded:
    """Embeddings (N, D) float32 and their labels: (N,) class indices as floats, or (N, L) with NaN for unknown."""

    features: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.features.shape[0])


def label_shape(label_info: LabelInfo) -> tuple[int, ...]:
    """The shape of one label: () for binary / multiclass, (labels,) for multilabel."""
    return (len(label_info.class_names),) if label_info.task == "multilabel" else ()


def embed_dataset(
    dataset: Dataset,
    embed_images: EmbedImages,
    device: torch.device,
    feature_dim: int,
    label_info: LabelInfo,
    batch_size: int,
    num_workers: int = 0,
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rank: int = 0,
    world_size: int = 1,
    all_gather: Gather | None = None,
) -> Embedded:
    """Embeddings of every item of ``dataset`` (``(image, label)`` items, as a stream's loader dataset yields).

    ``device_transform`` turns a batch on ``device`` into the encoder's input (a stream's ``to_encoder`` when it
    augments on the device). With ``world_size`` > 1 every process must call this (it gathers); rows are then
    ordered by process, then by position in the process's share: the same order for features and labels.
    """
    length = len(dataset)  # type: ignore[arg-type]
    loader = DataLoader(
        Subset(dataset, shard_indices(length, rank, world_size)),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    features = [torch.zeros(0, feature_dim, device=device)]
    labels = [torch.zeros((0, *label_shape(label_info)), device=device)]
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if device_transform is not None:
            images = device_transform(images)
        features.append(embed_images(images).float())
        labels.append(torch.as_tensor(targets).to(device, dtype=torch.float32))
    share_rows = math.ceil(length / world_size)
    gather = all_gather if world_size > 1 else None
    return Embedded(
        gather_shards(torch.cat(features), share_rows, gather), gather_shards(torch.cat(labels), share_rows, gather)
    )


def frozen_encoder_embedding(encoder: nn.Module, precision: str = "32", channels_last: bool = False) -> EmbedImages:
    """``embed_images`` for a bare encoder (no Lightning module): eval mode, ``no_grad``, the run's precision."""
    dtype = AUTOCAST_DTYPES.get(precision)

    def embed_images(images: torch.Tensor) -> torch.Tensor:
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast(images.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with frozen_eval_mode(encoder), autocast:
            return encoder(images).float()

    return embed_images
