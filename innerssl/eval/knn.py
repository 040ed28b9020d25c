"""kNN monitor: how well the SSL embeddings of a labeled dataset cluster by label, measured while training.

Beside the online linear head (as in solo-learn, Quadra and lightly's benchmarks): at the end of a
validation epoch (every ``every_n_epochs`` epochs, and always at the last one), the labeled training
images are embedded by the module's downstream encoder, without augmentation, into a *bank*; each
validation image is then classified by the temperature-weighted votes of its ``k`` nearest bank
embeddings by cosine similarity. Nothing is trained, so the metric depends on the embeddings alone.

Details:

- Embeddings come from :func:`innerssl.eval.online_linear.embed` (eval mode, ``no_grad``, the run's
  precision), so the encoder's weights and BatchNorm buffers are untouched; rows are L2-normalised.
- Votes: neighbour ``i`` with cosine similarity ``s_i`` has weight ``exp(s_i / temperature)``; the
  probability of a class is the weighted fraction of the ``min(k, bank size)`` neighbours that carry it
  (weights are shifted by each row's top similarity before ``exp``, which cancels in that fraction and
  keeps ``exp`` finite). Binary: the probability of the positive class; multiclass: one per class;
  multilabel: per label, each label voted on only by the neighbours whose label is known (not NaN),
  0.5 when none is. The probabilities go to :func:`innerssl.eval.metrics.classification_metrics`.
- Memory: validation rows are scored ``chunk_size`` at a time against the whole bank, on the module's
  device, so at most ``chunk_size x bank size`` similarities exist at once (never ``N_val x N_train``).
- DDP: each process embeds every ``world_size``-th image of the training set (no padding duplicates),
  the bank is gathered from all processes with ``pl_module.all_gather`` (shares padded to equal length
  and the padding dropped after), each process scores its own share of the validation set, and the
  predictions are gathered the same way, so every process computes the same metrics over each
  validation image exactly once.
- Logged: ``knn/val_accuracy``, ``knn/val_auroc``, ``knn/val_auprc`` (not during the sanity check).
  Its cost is one pass over the labeled training and validation sets per evaluation.

The SSL container creates it with :func:`knn_monitor_for`::

    monitor = knn_monitor_for(datamodule, k=20, temperature=0.07, every_n_epochs=1)  # None when off
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Subset

from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.metrics import classification_metrics
from innerssl.eval.online_linear import embed

logger = logging.getLogger(__name__)

METRIC_PREFIX = "knn"
DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07
DEFAULT_CHUNK_SIZE = 256
"""Validation rows scored at once: ``chunk_size x bank size`` float32 similarities (256 x 100k = 100 MB)."""
UNKNOWN_LABEL_PROBABILITY = 0.5
"""Multilabel: the probability of a label none of the neighbours knows."""

Gather = Callable[[torch.Tensor], torch.Tensor]
"""``pl_module.all_gather``: a tensor from every process, stacked along a new first dimension."""
Embed = Callable[[torch.Tensor], torch.Tensor]


# --- votes ---------------------------------------------------------------------------------------------
def _vote_targets(labels: torch.Tensor, label_info: LabelInfo) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One vote column per class (binary: 2, multiclass: C) or per label, and for multilabel which are known."""
    if label_info.task == "multilabel":
        labels = labels.float()
        known = ~torch.isnan(labels)
        return torch.nan_to_num(labels, nan=0.0), known.float()
    if label_info.task == "binary":
        num_classes = 2
    elif label_info.task == "multiclass":
        num_classes = len(label_info.class_names)
    else:
        raise ValueError(f"kNN votes need labels; the task is {label_info.task}")
    return F.one_hot(labels.long(), num_classes).float(), None


def knn_vote_probabilities(
    queries: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    label_info: LabelInfo,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Class probabilities of each query from its k nearest bank rows (cosine), weighted by exp(sim / T).

    ``queries`` (Q, D) and ``bank`` (N, D) are L2-normalised here; ``bank_labels`` are class indices (N,)
    or, for multilabel, (N, L) floats with NaN for unknown. Returns (Q,) for binary (positive class),
    (Q, C) for multiclass and (Q, L) for multilabel, computed ``chunk_size`` query rows at a time on the
    queries' device.
    """
    if bank.shape[0] == 0:
        raise ValueError("kNN needs a non-empty bank of labeled embeddings")
    if temperature <= 0 or k < 1 or chunk_size < 1:
        raise ValueError(
            f"kNN needs k >= 1, temperature > 0 and chunk_size >= 1 (got {k}, {temperature}, {chunk_size})"
        )
    device = queries.device
    queries = F.normalize(queries.float(), dim=1)
    bank = F.normalize(bank.float().to(device), dim=1)
    targets, known = _vote_targets(bank_labels.to(device), label_info)
    num_neighbours = min(k, bank.shape[0])
    chunks = []
    for start in range(0, queries.shape[0], chunk_size):
        similarities = queries[start : start + chunk_size] @ bank.T  # (chunk, N): the only large tensor
        top_similarities, top_indices = similarities.topk(num_neighbours, dim=1)  # sorted, best first
        del similarities
        # exp(s / T) up to a per-row factor exp(-s_max / T), which cancels in the vote fractions below.
        weights = ((top_similarities - top_similarities[:, :1]) / temperature).exp().unsqueeze(-1)
        votes = (weights * targets[top_indices]).sum(dim=1)
        if known is None:
            chunks.append(votes / weights.sum(dim=1))
        else:
            voters = (weights * known[top_indices]).sum(dim=1)
            fraction = votes / voters.clamp_min(torch.finfo(voters.dtype).tiny)
            chunks.append(torch.where(voters > 0, fraction, torch.full_like(fraction, UNKNOWN_LABEL_PROBABILITY)))
    num_columns = targets.shape[1]
    probabilities = torch.cat(chunks) if chunks else torch.zeros(0, num_columns, device=device)
    return probabilities[:, 1] if label_info.task == "binary" else probabilities


# --- sharding across processes -------------------------------------------------------------------------
def shard_indices(length: int, rank: int, world_size: int) -> range:
    """The indices process ``rank`` handles: every ``world_size``-th, so shares differ by at most one."""
    return range(rank, length, world_size)


def gather_shards(tensor: torch.Tensor, padded_rows: int, all_gather: Gather | None) -> torch.Tensor:
    """Rows of every process's ``tensor`` (each at most ``padded_rows`` long), padding removed.

    ``all_gather`` needs equal shapes on every process: each share is padded to ``padded_rows`` and a
    validity mask is gathered alongside.
    """
    if all_gather is None:
        return tensor
    rows = tensor.shape[0]
    padded = torch.zeros((padded_rows, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:rows] = tensor
    valid = (torch.arange(padded_rows, device=tensor.device) < rows).to(torch.int32)  # int: every backend has it
    gathered = all_gather(padded).flatten(0, 1)
    gathered_valid = all_gather(valid).flatten(0, 1).bool()
    return gathered[gathered_valid]


class KNNMonitor(pl.Callback):
    """Weighted kNN classification of a labeled validation set by a bank of labeled training embeddings.

    ``train_dataset`` and ``val_dataset`` yield ``(image, label)``; with ``device_transform`` None the images
    are already through the eval transform (no augmentation), as the encoder takes them, otherwise
    ``device_transform`` makes them so once a batch is on the module's device (the batched eval
    preprocessing). The callback builds its own loaders so that under DDP each process handles a disjoint
    share without duplicates.
    """

    def __init__(
        self,
        label_info: LabelInfo,
        train_dataset: Dataset,
        val_dataset: Dataset,
        k: int = DEFAULT_K,
        temperature: float = DEFAULT_TEMPERATURE,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        every_n_epochs: int = 1,
        batch_size: int = 256,
        num_workers: int = 0,
        device_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if label_info.task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"The kNN monitor needs a labeled dataset; the task is {label_info.task}")
        if k < 1 or temperature <= 0 or chunk_size < 1 or every_n_epochs < 1 or batch_size < 1:
            raise ValueError(
                "KNNMonitor needs k >= 1, temperature > 0, chunk_size >= 1, every_n_epochs >= 1, batch_size >= 1"
            )
        self.label_info = label_info
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.k = k
        self.temperature = temperature
        self.chunk_size = chunk_size
        self.every_n_epochs = every_n_epochs
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device_transform = device_transform

    # --- when -----------------------------------------------------------------------------------------
    def should_run(self, trainer: pl.Trainer) -> bool:
        if trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch + 1
        last_epoch = trainer.max_epochs is not None and 0 < trainer.max_epochs <= epoch
        return epoch % self.every_n_epochs == 0 or last_epoch

    # --- embedding ------------------------------------------------------------------------------------
    def _label_shape(self) -> tuple[int, ...]:
        return (len(self.label_info.class_names),) if self.label_info.task == "multilabel" else ()

    def _embed_share(
        self, dataset: Dataset, embed_fn: Embed, device: torch.device, rank: int, world_size: int, feature_dim: int
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """L2-normalised embeddings and labels of this process's share; and the padded share length."""
        length = len(dataset)  # type: ignore[arg-type]
        indices = shard_indices(length, rank, world_size)
        loader = DataLoader(
            Subset(dataset, indices),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
        )
        embeddings = [torch.zeros(0, feature_dim, device=device)]
        labels = [torch.zeros((0, *self._label_shape()), device=device)]
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            if self.device_transform is not None:
                images = self.device_transform(images)
            embeddings.append(F.normalize(embed_fn(images).float(), dim=1))
            labels.append(torch.as_tensor(targets).to(device, dtype=torch.float32))
        return torch.cat(embeddings), torch.cat(labels), math.ceil(length / world_size)

    def evaluate(
        self,
        embed_fn: Embed,
        device: torch.device,
        feature_dim: int,
        rank: int = 0,
        world_size: int = 1,
        all_gather: Gather | None = None,
    ) -> dict[str, float]:
        """Accuracy, AUROC and AUPRC of the kNN classifier; every process must call it (it gathers)."""
        gather = all_gather if world_size > 1 else None
        bank, bank_labels, bank_rows = self._embed_share(
            self.train_dataset, embed_fn, device, rank, world_size, feature_dim
        )
        bank = gather_shards(bank, bank_rows, gather)
        bank_labels = gather_shards(bank_labels, bank_rows, gather)
        queries, targets, query_rows = self._embed_share(
            self.val_dataset, embed_fn, device, rank, world_size, feature_dim
        )
        probabilities = knn_vote_probabilities(
            queries, bank, bank_labels, self.label_info, self.k, self.temperature, self.chunk_size
        )
        probabilities = gather_shards(probabilities, query_rows, gather)
        targets = gather_shards(targets, query_rows, gather)
        return classification_metrics(probabilities, targets, self.label_info)

    # --- hooks ----------------------------------------------------------------------------------------
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.should_run(trainer):
            if not trainer.sanity_checking:
                # Lightning keeps the last logged values; NaN marks "not computed this epoch" in metrics.csv.
                for name in KNN_METRICS:
                    pl_module.log(f"{METRIC_PREFIX}/val_{name}", math.nan, on_epoch=True, add_dataloader_idx=False)
            return
        if len(self.train_dataset) == 0 or len(self.val_dataset) == 0:  # type: ignore[arg-type]
            logger.warning("kNN monitor skipped: its labeled training or validation set is empty")
            return
        world_size = trainer.world_size
        metrics = self.evaluate(
            lambda images: embed(pl_module, images),
            pl_module.device,
            int(pl_module.feature_dim),
            rank=trainer.global_rank,
            world_size=world_size,
            all_gather=pl_module.all_gather,
        )
        for name, value in metrics.items():
            # Computed from every process's predictions, so equal on all (as the linear head's metrics).
            pl_module.log(
                f"{METRIC_PREFIX}/val_{name}", value, on_epoch=True, add_dataloader_idx=False, sync_dist=world_size > 1
            )


KNN_METRICS = ("accuracy", "auroc", "auprc")


def knn_monitor_for(
    datamodule: Any,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    every_n_epochs: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> KNNMonitor | None:
    """The kNN monitor on an :class:`~innerssl.data.datamodule.SSLDataModule`'s linear-head dataset.

    Bank: the linear head's training split, query: its validation split, both through the linear head's
    eval stream (the augmentation config's preprocess only, per sample or on the device), with its batch
    size and worker count. None when ``every_n_epochs`` is 0 or the datamodule has no labeled dataset.
    """
    splits = getattr(datamodule, "linear_head_splits", None)
    stream = getattr(datamodule, "linear_head_eval_stream", None)
    if every_n_epochs <= 0 or splits is None or stream is None:
        return None
    return KNNMonitor(
        splits.label_info,
        train_dataset=stream.loader_dataset(splits.train),
        val_dataset=stream.loader_dataset(splits.val),
        device_transform=stream.to_encoder if stream.on_device else None,
        k=k,
        temperature=temperature,
        chunk_size=chunk_size,
        every_n_epochs=every_n_epochs,
        batch_size=datamodule.linear_head_batch_size,
        num_workers=datamodule.num_workers,
    )
