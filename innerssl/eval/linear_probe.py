"""Linear evaluation of a frozen encoder: embed the labeled images once, fit a logistic regression to convergence.

Training a linear head by SGD on a frozen encoder spends one encoder forward pass per image per epoch, and
with few labels an epoch is one or two optimizer steps, so a fixed epoch count leaves the head far from the
optimum (a head that predicts one class for every image after 20 steps, say). A linear probe instead:

1. embeds the labeled training images once, with the eval preprocess (no augmentation), optionally plus a
   fixed number of passes with the training augmentation, and the validation images once
   (:mod:`innerssl.eval.embeddings`);
2. standardises the features with the training embeddings' mean and standard deviation;
3. fits a logistic regression for every L2 strength of a grid by full-batch L-BFGS (float64, strong-Wolfe line
   search) until the largest entry of the objective's gradient is below ``tolerance`` (1e-6; scikit-learn's
   L-BFGS stops at 1e-4), warm-started from the next stronger strength. The loss is
   :func:`innerssl.eval.metrics.classification_loss` (binary: sigmoid, with the balanced positive weight when
   asked; multiclass: softmax; multilabel: per-label sigmoid, NaN labels ignored) plus ``l2 / 2 x |weights|^2``
   (the bias is not penalised);
4. keeps the strength with the best validation AUROC (ties: the lower validation loss; validation loss alone
   where AUROC is undefined, e.g. one class in the validation split). This AUROC is computed exactly from the
   float64 logits' ranks (:func:`ranking_auroc`): float32 probabilities saturate at 0 and 1 for the large
   logits of weak regularisation, and float rounding would break the ties that decide between strengths;
5. folds the standardisation into the weights, so the result is an ordinary linear layer on raw embeddings:
   the classifier checkpoint (encoder + head) is what a trained classifier's is, for the test stage and export.

:class:`LinearProbeClassifier` does this inside Lightning's loop as one training step (its only step: the
loader's single batch only paces the loop), after which Lightning validates the fitted head on the real
validation images, writes ``best.ckpt`` / ``last.ckpt`` and stops; the test stage then runs as for any classifier.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.classifier import METRIC_PREFIX, SSLClassifier
from innerssl.eval.embeddings import Embedded, embed_dataset, label_shape
from innerssl.eval.metrics import classification_loss
from innerssl.eval.online_linear import embed

logger = logging.getLogger(__name__)

DEFAULT_L2_GRID = tuple(float(f"{10 ** (exponent / 2):.3g}") for exponent in range(-8, 5))
"""1e-4, 3.16e-4, ..., 31.6, 100: strengths of ``l2 / 2 x |w|^2`` beside the mean loss on standardised features."""
DEFAULT_MAX_ITERATIONS = 1000
DEFAULT_TOLERANCE = 1e-6
"""L-BFGS stops when the largest entry of the objective's gradient (mean loss + penalty, float64) is below this."""
LBFGS_HISTORY = 20
SINGLE_THREAD_ELEMENTS = 1 << 22
"""CPU fits on at most this many training feature values (e.g. 8k embeddings of 512) run on one thread: an
objective evaluation then takes well under a millisecond, and splitting it over threads costs more than it saves
(20x more on a busy 2-core machine)."""
FIT_DTYPE = torch.float64
MIN_SCALE = 1e-8
"""A feature whose training standard deviation is below this is constant: it is centred, not scaled."""
PROBE_METRICS = ("probe_l2", "probe_iterations", "probe_converged")
"""Logged by the probe's fit as ``classifier/<name>`` (columns of metrics.csv)."""


# --- the logistic regression ---------------------------------------------------------------------------
def probe_loss(
    logits: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo, positive_weight: float | None = None
) -> torch.Tensor:
    """:func:`~innerssl.eval.metrics.classification_loss` computed in the logits' dtype (that one casts binary and
    multilabel targets to float32, which would make a float64 fit's objective float32)."""
    if label_info.task == "multiclass":
        return F.cross_entropy(logits, targets.long())
    if label_info.task == "binary":
        weight = None
        if positive_weight is not None:
            weight = torch.tensor(positive_weight, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits.squeeze(1), targets.to(logits.dtype), pos_weight=weight)
    if label_info.task == "multilabel":
        known = ~torch.isnan(targets)
        return F.binary_cross_entropy_with_logits(logits[known], targets[known].to(logits.dtype))
    raise ValueError(f"No classification loss for task {label_info.task}")


@dataclass(frozen=True)
class LogisticRegression:
    """A fitted linear model ``logits = features @ weight.T + bias`` and how the fit ended."""

    weight: torch.Tensor
    """(outputs, features)"""
    bias: torch.Tensor
    """(outputs,)"""
    iterations: int
    converged: bool
    """Whether the objective's gradient ended below the tolerance (else the iteration limit or a stalled line
    search stopped it)."""

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight.dtype) @ self.weight.T + self.bias


def fit_logistic_regression(
    features: torch.Tensor,
    targets: torch.Tensor,
    label_info: LabelInfo,
    l2: float,
    positive_weight: float | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
    initial: LogisticRegression | None = None,
) -> LogisticRegression:
    """Minimise ``classification_loss(logits, targets) + l2 / 2 x |weight|^2`` by full-batch L-BFGS, in float64,
    until the gradient's largest entry is below ``tolerance``.

    ``features`` (N, D) should be standardised (the strength ``l2`` then means the same for every encoder);
    ``targets`` are class indices (N,) or, multilabel, (N, L) with NaN for unknown. ``initial`` warm-starts.
    """
    features = features.to(FIT_DTYPE)
    outputs = label_info.num_outputs
    if initial is not None:
        weight = initial.weight.detach().to(features).clone().requires_grad_(True)
        bias = initial.bias.detach().to(features).clone().requires_grad_(True)
    else:
        weight = torch.zeros(outputs, features.shape[1], dtype=FIT_DTYPE, device=features.device, requires_grad=True)
        bias = torch.zeros(outputs, dtype=FIT_DTYPE, device=features.device, requires_grad=True)

    def objective() -> torch.Tensor:
        loss = probe_loss(features @ weight.T + bias, targets, label_info, positive_weight)
        return loss + 0.5 * l2 * weight.square().sum()

    def largest_gradient() -> float:
        gradients = torch.autograd.grad(objective(), [weight, bias])
        value = max(gradient.abs().max().item() for gradient in gradients)
        return value if math.isfinite(value) else math.inf

    iterations = 0
    gradient = largest_gradient()
    # L-BFGS also stops when a step leaves the float64 loss unchanged, which can happen before the gradient
    # criterion is met: start it again from where it stopped (a fresh curvature memory) while that helps.
    while gradient > tolerance and iterations < max_iterations:
        optimizer = torch.optim.LBFGS(
            [weight, bias],
            lr=1.0,
            max_iter=max_iterations - iterations,
            max_eval=2 * (max_iterations - iterations),
            tolerance_grad=tolerance,
            tolerance_change=1e-20,
            history_size=LBFGS_HISTORY,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            optimizer.zero_grad()  # noqa: B023 (called within this iteration only)
            loss = objective()
            loss.backward()
            return loss

        optimizer.step(closure)  # type: ignore[arg-type]
        done = int(optimizer.state[weight].get("n_iter", 0))
        iterations += done
        previous, gradient = gradient, largest_gradient()
        if done == 0 or gradient >= previous:
            break  # no progress: the limit of float64 (or of the line search) is reached
    return LogisticRegression(weight.detach(), bias.detach(), iterations, converged=gradient <= tolerance)


# --- the probe: standardise, choose the L2 strength, fold -------------------------------------------------
def _binary_ranking_auroc(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mann-Whitney AUROC from ranks (ties averaged), exact in float64; NaN without both classes."""
    positives = targets == 1
    count_positive, count_negative = int(positives.sum()), int((targets == 0).sum())
    if count_positive == 0 or count_negative == 0:
        return math.nan
    _, inverse, counts = scores.to(FIT_DTYPE).unique(return_inverse=True, return_counts=True)
    average_ranks = counts.cumsum(0).to(FIT_DTYPE) - (counts.to(FIT_DTYPE) - 1) / 2  # 1-based
    rank_sum = average_ranks[inverse][positives].sum().item()
    return (rank_sum - count_positive * (count_positive + 1) / 2) / (count_positive * count_negative)


def ranking_auroc(logits: torch.Tensor, targets: torch.Tensor, label_info: LabelInfo) -> float:
    """AUROC of ``logits`` (binary; macro over classes one-vs-rest, or over labels with both outcomes known), from
    ranks of float64 scores: no saturation, no rounding, so equal rankings give equal values."""
    logits = logits.to(FIT_DTYPE)
    if label_info.task == "binary":
        return _binary_ranking_auroc(logits[:, 0], targets)
    values = []
    for column in range(logits.shape[1]):
        if label_info.task == "multiclass":
            others = torch.cat([logits[:, :column], logits[:, column + 1 :]], dim=1)
            # The log-odds of the class: a monotone function of its softmax probability that does not saturate.
            score = logits[:, column] - others.logsumexp(dim=1)
            values.append(_binary_ranking_auroc(score, (targets.long() == column).long()))
        else:
            known = ~torch.isnan(targets[:, column])
            values.append(_binary_ranking_auroc(logits[known, column], targets[known, column]))
    finite = [value for value in values if math.isfinite(value)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass(frozen=True)
class Standardisation:
    mean: torch.Tensor
    scale: torch.Tensor

    @classmethod
    def of(cls, features: torch.Tensor) -> Standardisation:
        features = features.to(FIT_DTYPE)
        scale = features.std(dim=0, unbiased=False)
        return cls(features.mean(dim=0), torch.where(scale < MIN_SCALE, torch.ones_like(scale), scale))

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return (features.to(FIT_DTYPE) - self.mean) / self.scale


@dataclass(frozen=True)
class L2Candidate:
    """One strength of the grid: its fit and how it did on the validation embeddings."""

    l2: float
    val_auroc: float
    val_loss: float
    fit: LogisticRegression

    def rank(self) -> tuple[float, float]:
        """Higher is better: validation AUROC (undefined counts as worst), then lower validation loss."""
        return (self.val_auroc if math.isfinite(self.val_auroc) else -math.inf, -self.val_loss)


@dataclass(frozen=True)
class LinearProbeFit:
    """The chosen model on raw (unstandardised) embeddings, and every candidate of the grid."""

    weight: torch.Tensor
    bias: torch.Tensor
    chosen: L2Candidate
    candidates: list[L2Candidate] = field(default_factory=list)

    @property
    def l2(self) -> float:
        return self.chosen.l2

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.to(self.weight.dtype) @ self.weight.T + self.bias

    def summary(self) -> str:
        rows = ", ".join(
            f"{c.l2:g}: {c.val_auroc:.4f}{'' if c.fit.converged else ' (not converged)'}" for c in self.candidates
        )
        return (
            f"L2 {self.l2:g} chosen by validation AUROC ({rows}); {self.chosen.fit.iterations} L-BFGS iterations, "
            f"{'converged' if self.chosen.fit.converged else 'NOT converged'}"
        )


@contextlib.contextmanager
def single_threaded(active: bool) -> Iterator[None]:
    """torch on one CPU thread inside (when ``active``); the previous thread count is restored after."""
    threads = torch.get_num_threads()
    if active:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if active:
            torch.set_num_threads(threads)


def fit_linear_probe(
    train: Embedded,
    val: Embedded,
    label_info: LabelInfo,
    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID,
    positive_weight: float | None = None,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
    tolerance: float = DEFAULT_TOLERANCE,
) -> LinearProbeFit:
    """Standardise, fit every strength of ``l2_grid`` (strongest first, each warm-starting the next), keep the best
    on ``val`` and fold the standardisation into the weights."""
    if not l2_grid:
        raise ValueError("The linear probe needs at least one L2 strength")
    if len(train) == 0:
        raise ValueError("The linear probe needs labeled training embeddings")
    standardise = Standardisation.of(train.features)
    train_features, val_features = standardise(train.features), standardise(val.features)
    candidates = []
    previous: LogisticRegression | None = None
    small = train_features.device.type == "cpu" and train_features.numel() <= SINGLE_THREAD_ELEMENTS
    with single_threaded(small):
        for l2 in sorted(l2_grid, reverse=True):
            previous = fit_logistic_regression(
                train_features, train.labels, label_info, l2, positive_weight, max_iterations, tolerance, previous
            )
            logits = previous.logits(val_features)
            auroc = ranking_auroc(logits, val.labels, label_info) if len(val) else math.nan
            val_loss = probe_loss(logits, val.labels, label_info, positive_weight).item() if len(val) else math.nan
            candidates.append(L2Candidate(l2, auroc, val_loss if math.isfinite(val_loss) else math.inf, previous))
    chosen = max(candidates, key=L2Candidate.rank)  # the first of equals: the stronger regularisation
    weight = chosen.fit.weight / standardise.scale
    return LinearProbeFit(weight, chosen.fit.bias - weight @ standardise.mean, chosen, candidates)


# --- the Lightning module ------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearProbeSettings:
    """How :class:`LinearProbeClassifier` fits its head (kept out of the checkpoint's hyperparameters, which stay
    those of :class:`SSLClassifier`, so the checkpoint is an ordinary classifier checkpoint)."""

    l2_grid: tuple[float, ...] = DEFAULT_L2_GRID
    max_iterations: int = DEFAULT_MAX_ITERATIONS
    tolerance: float = DEFAULT_TOLERANCE
    augmented_passes: int = 0
    """Passes over the training images with the training augmentation, besides the one without."""


class LinearProbeClassifier(SSLClassifier):
    """A classifier on a frozen encoder whose head is a logistic regression fitted to convergence in one step.

    Needs a datamodule with ``splits``, ``eval_stream``, ``train_stream``, ``batch_size`` and ``num_workers``
    (:class:`~innerssl.data.datamodule.ClassifierDataModule`); its training loader should yield one batch per
    epoch (the batch is not used). Set :attr:`settings` after construction.
    """

    settings: LinearProbeSettings = LinearProbeSettings()

    def __init__(self, **classifier_arguments: Any) -> None:
        super().__init__(**classifier_arguments)
        if not self.hparams.freeze_encoder:
            raise ValueError("A linear probe needs a frozen encoder (freeze_encoder=True)")
        self.automatic_optimization = False
        self.fit_result: LinearProbeFit | None = None

    def embedding_encoder(self) -> torch.nn.Module:
        return self.encoder

    def _embed(self, dataset: Any, stream: Any) -> Embedded:
        datamodule = self.trainer.datamodule
        return embed_dataset(
            stream.loader_dataset(dataset),
            lambda images: embed(self, images),
            self.device,
            int(self.encoder.feature_dim),
            self.label_info,
            batch_size=datamodule.batch_size,
            num_workers=datamodule.num_workers,
            device_transform=stream.to_encoder if stream.on_device else None,
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
            all_gather=self.all_gather,
        )

    def embed_training_images(self) -> Embedded:
        """The training split once with the eval preprocess, then ``augmented_passes`` times augmented."""
        datamodule = self.trainer.datamodule
        passes = [self._embed(datamodule.splits.train, datamodule.eval_stream)]
        for _ in range(self.settings.augmented_passes):
            passes.append(self._embed(datamodule.splits.train, datamodule.train_stream))
        return Embedded(torch.cat([p.features for p in passes]), torch.cat([p.labels for p in passes]))

    def fit_head(self) -> LinearProbeFit:
        """Embed, fit and copy the chosen model into ``self.head`` (the same on every process)."""
        datamodule = self.trainer.datamodule
        train = self.embed_training_images()
        val = self._embed(datamodule.splits.val, datamodule.eval_stream)
        settings = self.settings
        fit = fit_linear_probe(
            train,
            val,
            self.label_info,
            settings.l2_grid,
            self.hparams.positive_weight,
            settings.max_iterations,
            settings.tolerance,
        )
        weight, bias = fit.weight, fit.bias
        if self.trainer.world_size > 1:
            # Every process fitted the same gathered embeddings; rank 0's result makes the heads identical bit for bit.
            weight, bias = self.trainer.strategy.broadcast((weight, bias), src=0)
        linear = self.head[-1]
        with torch.no_grad():
            linear.weight.copy_(weight.to(linear.weight))
            linear.bias.copy_(bias.to(linear.bias))
        logger.info("Linear probe on %d training embeddings: %s", len(train), fit.summary())
        if not fit.chosen.fit.converged:
            logger.warning(
                "The linear probe's L-BFGS stopped before the gradient fell below %g: raise "
                "--linear_probe_max_iterations or choose stronger --linear_probe_l2_grid values",
                settings.tolerance,
            )
        targets = self._targets(train.labels)
        with torch.no_grad():
            logits = self.head(train.features.to(self.device))
            loss = classification_loss(logits, targets, self.label_info, self.hparams.positive_weight)
        self._predictions["train"].add(logits, targets, loss)
        self.fit_result = fit
        return fit

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Embedded labels (floats) as the loader yields them: class indices as integers, multilabel as floats."""
        return labels if label_shape(self.label_info) else labels.long()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        fit = self.fit_head()
        values = {"probe_l2": fit.l2, "probe_iterations": fit.chosen.fit.iterations}
        values["probe_converged"] = float(fit.chosen.fit.converged)
        for name in PROBE_METRICS:
            self.log(f"{METRIC_PREFIX}/{name}", float(values[name]), on_step=False, on_epoch=True)
        # The fit is the run's one optimizer step: Lightning counts steps by optimizer.step() calls, and its
        # checkpointing saves nothing in a run of zero steps. The optimizer has no gradients and no rate: a no-op.
        self.optimizers().step()  # type: ignore[union-attr]
        # The head is final: Lightning validates it, writes the checkpoints and ends training after this step.
        self.trainer.should_stop = True

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.head.parameters(), lr=0.0)
