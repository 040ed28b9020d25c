"""kNN monitor of a restoration ViT (MONAI's ViTAutoEnc, the masked-autoencoder ViT), 2D or 3D: how well its
pooled tokens of whole labeled images cluster by label while it pretrains.

The 2D SSL methods are monitored by a kNN on their encoder's embeddings (:mod:`innerssl.eval.knn`); a
restoration ViT has no pooled embedding of its own, and no anchor (MONAI's tutorial, BiaPy) monitors 3D SSL this
way. Here an image is embedded by cutting it into non-overlapping tiles of the ViT's input size (the last tile per
axis shifted back inside the image; images smaller than a tile are reflection-padded), running the ViT's encoder
(``patch_embedding``, ``blocks``, ``norm``: MONAI's names, no masking) on every tile and averaging all tokens of
all tiles. The labeled training images form the bank, the labeled validation images are classified by their k
nearest bank embeddings (cosine, votes weighted by ``exp(s / T)``, :func:`~innerssl.eval.knn.knn_vote_probabilities`)
and ``knn/val_accuracy`` / ``knn/val_auroc`` / ``knn/val_auprc`` are logged, the 2D monitor's names.

Labels come from a CSV (``--monitor_labels``) with columns ``image`` (the sample's name: its file name without the
suffix, e.g. ``hippocampus_001``) and ``label``; images the CSV does not list are left out of the monitor. Every
process computes the same metrics from the same images (tens of volumes: cheaper than gathering).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from innerssl.data.datasets.base import LabelInfo
from innerssl.data.tiling import TilingPlan
from innerssl.errors import UserError
from innerssl.eval.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_vote_probabilities
from innerssl.eval.metrics import classification_metrics

logger = logging.getLogger(__name__)

LABELS_FLAG = "--monitor_labels"
PREFIX = "knn"
ENCODER_PARTS = ("patch_embedding", "blocks", "norm")


@dataclass(frozen=True)
class ImageLabels:
    """Class index per image name, and what the classes are."""

    by_name: dict[str, int]
    label_info: LabelInfo


def read_image_labels(path: Path | str) -> ImageLabels:
    """``--monitor_labels``: a CSV of ``image,label``; two classes are binary (the sorted second is positive)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{LABELS_FLAG}={path} is not a file: pass a CSV with columns image,label")
    try:
        table = pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise UserError(f"{LABELS_FLAG}={path} is not a readable CSV ({error}): write columns image,label") from None
    missing = [column for column in ("image", "label") if column not in table.columns]
    if missing:
        raise UserError(f"{path} has no column {' or '.join(missing)}: the monitor labels need columns image,label")
    table = table.dropna(subset=["image", "label"])
    repeated = table.image[table.image.duplicated()].tolist()
    if repeated:
        raise UserError(f"{path} lists {repeated[0]} more than once: give each image one label")
    classes = sorted(table.label.unique())
    if len(classes) < 2:
        raise UserError(f"{path} holds {len(classes)} class(es): a kNN monitor needs at least two")
    index = {name: position for position, name in enumerate(classes)}
    info = LabelInfo("binary" if len(classes) == 2 else "multiclass", tuple(classes))
    return ImageLabels({str(image): index[label] for image, label in zip(table.image, table.label)}, info)


def vit_tokens(network: nn.Module, images: Tensor) -> Tensor:
    """The ViT encoder's tokens ``(N, T, D)`` of ``images`` ``(N, C, *input size)``, no masking."""
    if not all(hasattr(network, part) for part in ENCODER_PARTS):
        raise UserError(
            f"{LABELS_FLAG} monitors a ViT's tokens, and {type(network).__name__} is not a ViT: use a vit_autoenc or "
            "vit_mae network, or drop the flag"
        )
    tokens = network.patch_embedding(images)
    blocks = network.blocks
    for block in blocks if isinstance(blocks, nn.ModuleList) else [blocks]:
        tokens = block(tokens)
    return network.norm(tokens)


@torch.no_grad()
def pooled_token_embedding(
    network: nn.Module, image: Tensor, input_size: Sequence[int], tiles_per_call: int = 8
) -> Tensor:
    """The mean token ``(D,)`` over non-overlapping tiles of ``image`` ``(C, *spatial)`` (see the module doc)."""
    tiles = TilingPlan(tuple(image.shape[1:]), tuple(input_size)).split(image)
    tokens = torch.cat([vit_tokens(network, tiles[start : start + tiles_per_call]).float()
                        for start in range(0, tiles.shape[0], tiles_per_call)])  # fmt: skip
    return tokens.mean(dim=(0, 1))


class TokenKNNMonitor(pl.Callback):
    """Every ``every_n_epochs`` validation epochs (and the last), the kNN metrics of the module's network."""

    def __init__(
        self,
        bank: Sequence[tuple[Tensor, int]],
        queries: Sequence[tuple[Tensor, int]],
        label_info: LabelInfo,
        input_size: Sequence[int],
        every_n_epochs: int = 1,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
    ) -> None:
        if not bank or not queries:
            raise UserError(
                f"{LABELS_FLAG} labels {len(bank)} training and {len(queries)} validation image(s): the kNN monitor "
                "needs labeled images in both splits (add their names to the CSV)"
            )
        self.bank, self.queries = list(bank), list(queries)
        self.label_info = label_info
        self.input_size = tuple(input_size)
        self.every_n_epochs, self.k, self.temperature = every_n_epochs, k, temperature

    def should_run(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking or self.every_n_epochs < 1:
            return False
        epoch = trainer.current_epoch + 1
        return epoch % self.every_n_epochs == 0 or epoch == trainer.max_epochs

    def evaluate(self, network: nn.Module, device: torch.device) -> dict[str, float]:
        was_training = network.training
        network.eval()
        try:
            bank = torch.stack(
                [pooled_token_embedding(network, image.to(device), self.input_size) for image, _ in self.bank]
            )
            queries = torch.stack(
                [pooled_token_embedding(network, image.to(device), self.input_size) for image, _ in self.queries]
            )
        finally:
            network.train(was_training)
        bank_labels = torch.tensor([label for _, label in self.bank])
        query_labels = torch.tensor([label for _, label in self.queries])
        probabilities = knn_vote_probabilities(queries, bank, bank_labels, self.label_info, self.k, self.temperature)
        return classification_metrics(probabilities, query_labels, self.label_info)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.should_run(trainer):
            return
        network = pl_module.network
        for name, value in self.evaluate(network, pl_module.device).items():
            pl_module.log(f"{PREFIX}/val_{name}", value, on_epoch=True, rank_zero_only=True)


def labeled(images: Sequence[object], labels: ImageLabels) -> list[tuple[Tensor, int]]:
    """(image tensor, class) of the ``LoadedImage``s the CSV labels."""
    return [(image.image, labels.by_name[image.name]) for image in images if image.name in labels.by_name]  # type: ignore[attr-defined]
