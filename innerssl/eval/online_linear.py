"""Online linear-head monitor: how linearly separable the SSL embeddings are, measured while training.

A linear classifier on detached embeddings of a separate labeled dataset, with its own optimizer (as InnerEye's
SSLOnlineEvaluator), built to read what a linear probe of the current encoder would read:

- **Standardised features.** The head is ``linear((x - mean) / std)``; ``mean`` and ``std`` are running
  estimates over the labeled batches (an exponential moving average with weight ``statistics_momentum`` per
  batch, the plain average of the batches seen while they are fewer than ``1 / statistics_momentum``). Raw
  pooled features have offsets and scales that differ by orders of magnitude between dimensions and drift as the
  encoder trains, which leaves gradient steps badly conditioned; the moving average follows the drift (with the
  default 0.1, the last ~10 batches count) where fixed statistics would not. Like BatchNorm1d without affine
  parameters, except that training and evaluation use the same (running) statistics, so the head is trained on
  exactly the function it is evaluated with.
- **Several steps per labeled batch.** Each labeled batch is embedded once and the head takes
  ``steps_per_batch`` AdamW steps on it: the encoder pass is the expensive part, the head's steps cost next to
  nothing.
- **A converged fit at every validation** (``probe_images`` given; the SSL container's default). Streaming steps
  are too few to reach the optimum of a logistic regression: on the demo, 20 labeled batches per epoch leave the
  head 0.03-0.1 AUROC below the converged probe of the same embeddings (and the embeddings it trained on are
  augmented and up to an epoch old). So before the validation metrics are computed, the labeled training split is
  embedded by the current encoder through the eval preprocess (no augmentation), and the head is replaced by a
  logistic regression fitted to convergence on them: full-batch L-BFGS on standardised features, the L2 strength
  chosen by validation AUROC from a grid, exactly as the frozen linear-probe classifier
  (:func:`innerssl.eval.linear_probe.fit_linear_probe`). Its validation metrics are those of a converged linear
  probe of this epoch's encoder. The streaming steps then continue from that fit. Cost: one no-grad pass over the
  labeled training split per validation (as the kNN monitor's bank) and the fit on its embeddings.

What stays as it was:

- the encoder runs in eval mode under ``no_grad`` for these batches, so neither its weights nor its BatchNorm
  running statistics are changed by them;
- the head's weights, its standardisation statistics and its optimizer state are part of the checkpoint
  (``state_dict``) and restored on resume, also from a checkpoint written mid-epoch;
- under DDP the head's gradients and the batches' statistics are averaged across processes (one all-reduce
  each), so every process takes identical steps; the converged fit sees every process's embeddings and rank 0's
  result is broadcast; metrics come from predictions gathered over all processes;
- binary, multiclass and multilabel tasks (unknown multilabel labels, NaN, are ignored), and the balanced binary
  loss (``positive_weight``).

Training batches are dicts with the labeled batch under ``batch_key``; validation batches come from
validation dataloader ``val_dataloader_index``. :func:`online_linear_head_for` builds the monitor for an SSL
data module.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from innerssl.batches import LINEAR_HEAD_BATCH_KEY, LINEAR_HEAD_VAL_DATALOADER_INDEX
from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.metrics import EpochPredictions, classification_loss

logger = logging.getLogger(__name__)

METRIC_PREFIX = "linear_head"
PROBE_L2_METRIC = f"{METRIC_PREFIX}/probe_l2"
"""The L2 strength the converged fit chose at a validation (a column of metrics.csv)."""
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_STEPS_PER_BATCH = 10
DEFAULT_STATISTICS_MOMENTUM = 0.1
MIN_STD = 1e-8
"""A feature whose standard deviation is below this is constant: it is centred, not scaled (as the linear probe)."""


@contextlib.contextmanager
def frozen_eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no gradients inside; the previous training mode is restored on exit."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield module
    finally:
        module.train(was_training)


def embed(pl_module: pl.LightningModule, images: torch.Tensor) -> torch.Tensor:
    """Embeddings of ``images`` by the module's downstream encoder, without touching its state."""
    encoder = pl_module.embedding_encoder()
    if pl_module.hparams.get("channels_last"):
        images = images.contiguous(memory_format=torch.channels_last)
    with frozen_eval_mode(encoder), pl_module.trainer.precision_plugin.forward_context():
        return encoder(images).float()


def average_gradients_across_processes(module: nn.Module, world_size: int) -> None:
    """Replace every gradient of ``module`` by its mean over the DDP processes (one all-reduce for all).

    Each process then takes the same optimizer step from the same weights, so the weights stay identical.
    """
    parameters = [p for p in module.parameters() if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in parameters])
    torch.distributed.all_reduce(flat)
    flat /= world_size
    offset = 0
    for parameter in parameters:
        count = parameter.grad.numel()
        parameter.grad.copy_(flat[offset : offset + count].view_as(parameter.grad))
        offset += count


# --- the head ----------------------------------------------------------------------------------------------
class RunningStandardisation(nn.Module):
    """``(x - mean) / std`` with running estimates of each feature's mean and variance (buffers, so checkpointed)."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("var", torch.ones(num_features))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def scale(self) -> torch.Tensor:
        std = self.var.sqrt()
        return torch.where(std < MIN_STD, torch.ones_like(std), std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean) / self.scale()

    @torch.no_grad()
    def update(self, features: torch.Tensor, momentum: float, world_size: int = 1) -> None:
        """Move the estimates towards this batch's mean and variance (over all processes' batches under DDP).

        Two passes (two small all-reduces under DDP), the variance from squares around the batch mean: the one-pass
        ``E[x^2] - E[x]^2`` loses all float32 precision for features whose offset is large beside their spread.
        """
        features = features.float()
        sums = torch.cat([features.sum(dim=0), features.new_tensor([features.shape[0]])])
        if world_size > 1:
            torch.distributed.all_reduce(sums)
        count = sums[-1].clamp_min(1)
        batch_mean = sums[:-1] / count
        squares = (features - batch_mean).square().sum(dim=0)
        if world_size > 1:
            torch.distributed.all_reduce(squares)
        batch_var = squares / count
        # The plain average of the first batches (as BatchNorm with momentum=None), then the moving average: the
        # first batch alone would otherwise weigh (1 - momentum)^n long after.
        weight = max(momentum, 1.0 / (int(self.batches_seen) + 1))
        self.mean.lerp_(batch_mean, weight)
        self.var.lerp_(batch_var, weight)
        self.batches_seen += 1

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.var.copy_(var)


class StandardisedLinear(nn.Module):
    """The online head: running standardisation, then a linear layer."""

    def __init__(self, num_features: int, num_outputs: int) -> None:
        super().__init__()
        self.standardisation = RunningStandardisation(num_features)
        self.linear = nn.Linear(num_features, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.standardisation(features))

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> StandardisedLinear:
        """The head a checkpoint's callback state (its ``head`` entry) holds."""
        num_outputs, num_features = state["linear.weight"].shape
        head = cls(int(num_features), int(num_outputs))
        head.load_state_dict(state)
        return head

    @torch.no_grad()
    def set_raw_linear_model(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Make the head compute ``features @ weight.T + bias`` on raw features, under its current standardisation."""
        scale = self.standardisation.scale().to(weight.dtype)
        mean = self.standardisation.mean.to(weight.dtype)
        self.linear.weight.copy_(weight * scale)
        self.linear.bias.copy_(bias + weight @ mean)


# --- the monitor -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeImages:
    """The labeled training images the converged fit at validation embeds: ``(image, label)`` items through the
    eval preprocess; ``device_transform`` finishes the preprocess once a batch is on the device (or None)."""

    dataset: Dataset
    device_transform: Callable[[torch.Tensor], torch.Tensor] | None
    batch_size: int
    num_workers: int = 0


class OnlineLinearHead(pl.Callback):
    """Trains and evaluates a linear classifier on frozen embeddings during SSL training.

    ``probe_images`` None: the head is trained by the streaming steps only (cheaper; it lags a converged probe).
    """

    def __init__(
        self,
        label_info: LabelInfo,
        learning_rate: float = DEFAULT_LEARNING_RATE,
        weight_decay: float = 0.0,
        positive_weight: float | None = None,
        seed: int = 0,
        steps_per_batch: int = DEFAULT_STEPS_PER_BATCH,
        statistics_momentum: float = DEFAULT_STATISTICS_MOMENTUM,
        probe_images: ProbeImages | None = None,
    ) -> None:
        if steps_per_batch < 1 or not 0 < statistics_momentum <= 1:
            raise ValueError("OnlineLinearHead needs steps_per_batch >= 1 and 0 < statistics_momentum <= 1")
        self.label_info = label_info
        self.seed = seed
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.positive_weight = positive_weight
        self.steps_per_batch = steps_per_batch
        self.statistics_momentum = statistics_momentum
        self.probe_images = probe_images
        self.head: StandardisedLinear | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_state: dict[str, Any] | None = None
        self._predictions = {split: EpochPredictions(label_info) for split in ("train", "val")}
        self._val_embeddings: list[tuple[torch.Tensor, torch.Tensor]] = []

    # --- state -------------------------------------------------------------------------------------
    def _new_optimizer(self, head: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(head.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)

    def _ensure_head(self, pl_module: pl.LightningModule) -> StandardisedLinear:
        if self.head is None:
            # Initialised from its own seed, not the global random stream (which differs between processes
            # once data loading has drawn from it): every DDP process starts from the same head, and the
            # training's random stream is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(self.seed)
                self.head = StandardisedLinear(int(pl_module.feature_dim), self.label_info.num_outputs)
        if self.head.linear.weight.device != pl_module.device or self.optimizer is None:
            self.head.to(pl_module.device)
            self.optimizer = self._new_optimizer(self.head)
            if self._pending_state is not None:
                self._restore(self._pending_state)
                self._pending_state = None
        return self.head

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.head is not None and self.optimizer is not None
        if "linear.weight" not in state["head"]:
            # A checkpoint of the earlier head (a linear layer on raw features): its weights mean nothing under the
            # standardisation. Start afresh; the next validation's converged fit makes up for it.
            logger.warning("The checkpoint's online linear head predates its standardised features: starting it anew")
            return
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])

    def state_dict(self) -> dict[str, Any]:
        if self.head is None or self.optimizer is None:
            return dict(self._pending_state or {})
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        self._pending_state = state_dict
        if self.head is not None:
            self.optimizer = None  # re-created and loaded on next use, on the right device

    # --- streaming steps -----------------------------------------------------------------------------
    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.label_info.task == "multilabel":
            # classification_loss's mean over the known (not NaN) labels, but 0 where a batch has none (the mean over
            # nothing is NaN and would poison the head), without asking the device whether it has any.
            known = ~torch.isnan(targets)
            losses = F.binary_cross_entropy_with_logits(logits, targets.nan_to_num(0.0), reduction="none")
            return (losses * known).sum() / known.sum().clamp_min(1)
        return classification_loss(logits, targets, self.label_info, self.positive_weight)

    def train_on_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any) -> None:
        """Embed one labeled batch, update the standardisation and take ``steps_per_batch`` steps on it."""
        images, targets = batch
        head = self._ensure_head(pl_module)
        assert self.optimizer is not None
        features = embed(pl_module, images)
        world_size = trainer.world_size
        head.standardisation.update(features, self.statistics_momentum, world_size)
        for step in range(self.steps_per_batch):
            logits = head(features)
            loss = self._loss(logits, targets)
            if step == 0:
                # Predictions before any step on this batch: the training metrics are not flattered by the steps.
                self._predictions["train"].add(logits, targets, loss)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if world_size > 1:
                average_gradients_across_processes(head, world_size)
            self.optimizer.step()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(batch, dict) or LINEAR_HEAD_BATCH_KEY not in batch:
            return
        self.train_on_batch(trainer, pl_module, batch[LINEAR_HEAD_BATCH_KEY])

    # --- the converged fit ---------------------------------------------------------------------------
    def fit_to_convergence(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float | None:
        """Replace the head by a logistic regression fitted to convergence on fresh embeddings of the labeled
        training split (L2 strength chosen on this validation's embeddings); returns that strength, None when
        there was nothing to fit."""
        # Imported here: both modules import this one (for ``embed`` and ``frozen_eval_mode``).
        from innerssl.eval.embeddings import Embedded, embed_dataset
        from innerssl.eval.linear_probe import fit_linear_probe

        images = self.probe_images
        if images is None or not self._val_embeddings:
            return None
        head = self._ensure_head(pl_module)
        world_size = trainer.world_size
        gather = pl_module.all_gather if world_size > 1 else None
        train = embed_dataset(
            images.dataset,
            lambda batch: embed(pl_module, batch),
            pl_module.device,
            int(pl_module.feature_dim),
            self.label_info,
            batch_size=images.batch_size,
            num_workers=images.num_workers,
            device_transform=images.device_transform,
            rank=trainer.global_rank,
            world_size=world_size,
            all_gather=gather,
        )
        if len(train) == 0:
            return None
        val_features = torch.cat([features for features, _ in self._val_embeddings])
        val_labels = torch.cat([targets for _, targets in self._val_embeddings]).float()
        if gather is not None:
            # Every process's validation share: the strength is chosen on the whole validation set. (The shares of
            # a DistributedSampler have equal lengths.)
            val_features, val_labels = gather(val_features).flatten(0, 1), gather(val_labels).flatten(0, 1)
        if train.features.device.type == "mps":  # the fit runs in float64, which MPS lacks
            train = Embedded(train.features.cpu(), train.labels.cpu())
            val_features, val_labels = val_features.cpu(), val_labels.cpu()
        with torch.enable_grad():  # Lightning validates under no_grad; L-BFGS needs the objective's gradients
            fit = fit_linear_probe(
                train, Embedded(val_features, val_labels), self.label_info, positive_weight=self.positive_weight
            )
        mean, var = train.features.mean(dim=0), train.features.var(dim=0, unbiased=False)
        model = (fit.weight.float(), fit.bias.float(), mean, var)
        if world_size > 1:
            # Every process fitted the same embeddings; rank 0's result makes the heads identical bit for bit.
            model = trainer.strategy.broadcast(model, src=0)
        weight, bias, mean, var = (tensor.to(pl_module.device) for tensor in model)
        head.standardisation.set_statistics(mean, var)
        head.set_raw_linear_model(weight, bias)
        # The weights jumped to the optimum: the moments of the steps that led elsewhere no longer apply.
        self.optimizer = self._new_optimizer(head)
        return fit.l2

    # --- validation ------------------------------------------------------------------------------------
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if dataloader_idx != LINEAR_HEAD_VAL_DATALOADER_INDEX:
            return
        images, targets = batch
        self._ensure_head(pl_module)
        # Kept, not scored yet: the converged fit at the epoch's end chooses its strength on them first.
        self._val_embeddings.append((embed(pl_module, images), targets))

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["val"].reset()
        self._val_embeddings = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        l2 = None if trainer.sanity_checking else self.fit_to_convergence(trainer, pl_module)
        if self.head is not None:
            with torch.no_grad():
                for features, targets in self._val_embeddings:
                    logits = self.head(features)
                    self._predictions["val"].add(logits, targets, self._loss(logits, targets))
        self._val_embeddings = []
        self._predictions["val"].log_epoch(pl_module, METRIC_PREFIX, "val")
        if l2 is not None:
            pl_module.log(
                PROBE_L2_METRIC, l2, on_epoch=True, add_dataloader_idx=False, sync_dist=trainer.world_size > 1
            )

    # --- training metrics --------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["train"].reset()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._predictions["train"].log_epoch(pl_module, METRIC_PREFIX, "train")


def online_linear_head_for(
    datamodule: Any,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    steps_per_batch: int = DEFAULT_STEPS_PER_BATCH,
    statistics_momentum: float = DEFAULT_STATISTICS_MOMENTUM,
    fit_at_validation: bool = True,
    positive_weight: float | None = None,
    seed: int = 0,
) -> OnlineLinearHead | None:
    """The online head on an :class:`~innerssl.data.datamodule.SSLDataModule`'s linear-head dataset; None when it
    has none. With ``fit_at_validation`` the converged fit embeds the linear head's training split through its
    eval stream (preprocess only), with its batch size and worker count, as the kNN monitor's bank."""
    splits = getattr(datamodule, "linear_head_splits", None)
    if splits is None:
        return None
    stream = getattr(datamodule, "linear_head_eval_stream", None)
    probe_images = None
    if fit_at_validation and stream is not None:
        probe_images = ProbeImages(
            stream.loader_dataset(splits.train),
            stream.to_encoder if stream.on_device else None,
            batch_size=datamodule.linear_head_batch_size,
            num_workers=datamodule.num_workers,
        )
    return OnlineLinearHead(
        splits.label_info,
        learning_rate=learning_rate,
        positive_weight=positive_weight,
        seed=seed,
        steps_per_batch=steps_per_batch,
        statistics_momentum=statistics_momentum,
        probe_images=probe_images,
    )
