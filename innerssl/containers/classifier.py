"""SSLClassifierContainer: a classifier from an SSL checkpoint's encoder (linear probe or finetuning).

Training budget: a classifier trained by AdamW (finetuning, or ``--linear_probe_solver=adamw``) takes the same
number of optimizer steps whatever ``--label_fraction`` is. Each of its ``num_epochs`` epochs (a validation, a
checkpoint and an early-stopping check each) is ``steps_per_epoch`` batches: ``--classifier_max_steps`` /
``num_epochs``, or by default the batches of one pass over the *whole* labeled training split, so a subset is
cycled through (reshuffled at every pass) instead of giving an epoch of one or two steps. The learning-rate
schedule follows the fraction of epochs done, which with equal epochs is the fraction of steps done.

A frozen encoder with ``--linear_probe_solver=lbfgs`` (the default) is a linear probe instead
(:mod:`innerssl.eval.linear_probe`): the images are embedded once and a logistic regression is fitted to
convergence in one step, with the L2 strength chosen on the validation split.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import param
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from torch import nn

from innerssl.cloud.parameters import AzureMLParameters
from innerssl.containers.base import Container
from innerssl.containers.groups.data import DataParameters
from innerssl.containers.groups.encoder import EncoderParameters
from innerssl.containers.groups.monitoring import KNNParameters
from innerssl.containers.groups.optimisation import OptimisationParameters
from innerssl.data.datamodule import ClassifierDataModule
from innerssl.data.datasets.base import DatasetSplits, LabeledSubset, UsedDataset, count_labels
from innerssl.data.splits import label_fraction_subset
from innerssl.distributed import effective_learning_rate, world_size
from innerssl.errors import UserError
from innerssl.eval.classifier import METRIC_PREFIX, SSLClassifier
from innerssl.eval.linear_probe import (
    DEFAULT_L2_GRID,
    DEFAULT_MAX_ITERATIONS,
    LinearProbeClassifier,
    LinearProbeSettings,
)
from innerssl.networks import EncoderSpec, create_encoder
from innerssl.networks.weights import IMAGENET, NO_WEIGHTS, load_starting_weights
from innerssl.outputs.checkpoints import (
    check_encoder_spec,
    classifier_checkpoint_encoder_spec,
    ssl_checkpoint_encoder,
)

logger = logging.getLogger(__name__)

COMPARE_MODES = ("frozen", "finetuned", "knn")
"""How the label-fraction comparison evaluates an encoder: linear probe, finetuning, kNN votes (nothing trained)."""
FREEZE_MODES = COMPARE_MODES  # the parameter keeps its name, compare_freeze_modes
LINEAR_PROBE_SOLVERS = ("lbfgs", "adamw")
COMPARE_BASELINES = ("random", "imagenet")
"""Encoders the comparison measures the SSL ones against (their init names in comparison.csv)."""
PRETRAINED_INIT = "pretrained"
"""The init name of --local_weights_path's encoder in the comparison."""


@dataclass(frozen=True)
class TrainingBudget:
    """Optimizer steps of a classifier trained by AdamW: ``epochs`` epochs of ``steps_per_epoch`` batches each."""

    epochs: int
    steps_per_epoch: int

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@contextlib.contextmanager
def seeded_initialisation(seed: int) -> Iterator[None]:
    """Networks created inside start from ``seed`` alone, whatever drew from the global random stream before
    (dataset generation, caches): a random-init baseline is the same encoder in every mode of a comparison.
    The global stream is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class SSLClassifierContainer(
    Container, DataParameters, EncoderParameters, OptimisationParameters, KNNParameters, AzureMLParameters
):
    """Trains a classifier on ``linear_head_dataset_name`` from the encoder of an SSL checkpoint.

    The labeled dataset's folder is the first of ``extra_local_dataset_paths`` if given, else
    ``local_dataset``. Without ``local_weights_path`` the encoder starts from random weights (the baseline
    that shows what pretraining adds). It has no SSL method's parameters: those belong to SSL runs.
    """

    group_title: ClassVar[str] = "Classifier"
    group_order: ClassVar[int] = 70

    local_weights_path: str | None = param.String(
        None,
        allow_None=True,
        doc="SSL checkpoint (last.ckpt or best.ckpt of an SSL run) whose encoder the classifier starts from. "
        "None: a randomly initialised encoder.",
    )
    freeze_encoder: bool = param.Boolean(
        True,
        doc="Train only a linear head on frozen encoder features, a linear probe (see --linear_probe_solver); "
        "false: finetune the whole network.",
    )
    linear_probe_solver: str = param.Selector(
        objects=list(LINEAR_PROBE_SOLVERS),
        default="lbfgs",
        doc="How the head on a frozen encoder is trained. lbfgs: embed the labeled training and validation images "
        "once (eval preprocess, no augmentation), fit a logistic regression on the standardised embeddings to "
        "convergence (full-batch L-BFGS) for every --linear_probe_l2_grid strength and keep the best on validation "
        "AUROC; one training step, seconds on a CPU. adamw: train the head by AdamW on augmented batches for the "
        "step budget, as finetuning does (--classifier_max_steps, --num_epochs).",
    )
    linear_probe_l2_grid: list[float] = param.List(
        list(DEFAULT_L2_GRID),
        item_type=float,
        doc="Linear probe (lbfgs): the L2 strengths tried, each the weight of 0.5 x |weights|^2 beside the mean loss "
        "on standardised embeddings; the one with the best validation AUROC is kept (ties: lower validation loss).",
    )
    linear_probe_max_iterations: int = param.Integer(
        DEFAULT_MAX_ITERATIONS,
        bounds=(1, None),
        doc="Linear probe (lbfgs): L-BFGS iterations at most per L2 strength (it stops earlier once the largest "
        "gradient entry of the mean loss + penalty is below 1e-6; a chosen fit that does not get there is logged as "
        "not converged).",
    )
    linear_probe_augmented_passes: int = param.Integer(
        0,
        bounds=(0, None),
        doc="Linear probe (lbfgs): besides the one pass without augmentation, embed the training images this many "
        "more times with the training augmentation (--linear_head_augmentation_config) and fit on all of them.",
    )
    classifier_max_steps: int | None = param.Integer(
        None,
        allow_None=True,
        bounds=(1, None),
        doc="Optimizer steps of a classifier trained by AdamW (finetuning, --linear_probe_solver=adamw), the same "
        "at every --label_fraction: num_epochs epochs of ceil(classifier_max_steps / num_epochs) steps each "
        "(each epoch ends with a validation, a checkpoint and an early-stopping check). None: num_epochs epochs "
        "of one pass over the whole labeled training split each, also when training on a fraction of it.",
    )
    classifier_early_stopping_patience: int = param.Integer(
        5,
        bounds=(0, None),
        doc="Classifiers trained by AdamW stop after this many epochs without a better validation AUROC (the test "
        "stage uses the best epoch's checkpoint either way); 0: never stop early.",
    )
    classifier_dropout: float = param.Number(0.0, bounds=(0, 1), doc="Dropout before the classifier's linear layer.")
    use_balanced_binary_loss_for_classifier: bool = param.Boolean(
        False, doc="Weight the positive class by negatives/positives in binary classification losses."
    )
    label_fraction: float = param.Number(
        1.0,
        bounds=(0, 1),
        inclusive_bounds=(False, True),
        doc="Train on this fraction of the labeled training split (0 < f <= 1): a seeded subset (--random_seed), "
        "whole patients where the dataset has patient ids, stratified by class for binary/multiclass labels "
        "(at least one image per class when the fraction allows), a plain patient subset for multilabel. "
        "Validation and test splits are untouched.",
    )
    test_only_checkpoint: str | None = param.String(
        None,
        allow_None=True,
        doc="A classifier checkpoint (checkpoints/best.ckpt of a classifier run): skip training and evaluate it on "
        "the test split, writing test_predictions.csv and charts/test_roc.png into a new run folder.",
    )
    compare_with_random_init: bool = param.Boolean(
        False,
        doc="Instead of one run, compare classifiers from the SSL encoder (--local_weights_path, required; init "
        "'pretrained') with baselines (--compare_baselines: a random encoder, ImageNet weights) and further SSL "
        "checkpoints (--compare_extra_checkpoints) for every freeze mode x label fraction x repeat; writes "
        "comparison.md, comparison.png and comparison.csv (test metrics of the best-on-validation checkpoints).",
    )
    compare_baselines: list[str] = param.List(
        ["random"],
        item_type=str,
        doc="Comparison: the encoders the SSL ones are measured against, each a row per setting and a line in the "
        "chart: random (a seeded random encoder, init 'random'), imagenet (starting weights from "
        "--compare_imagenet_weights, init 'imagenet'); e.g. --compare_baselines=random,imagenet. Empty: none.",
    )
    compare_imagenet_weights: str = param.String(
        IMAGENET,
        doc="Comparison: where the imagenet baseline's encoder weights come from, as --encoder_weights takes them: "
        "imagenet (torchvision's or timm's own for --ssl_encoder, downloaded on first use; offline: pass a file) "
        "or a state dict file (.pt/.pth/.safetensors, e.g. torchvision's resnet18 weights saved by torch.save).",
    )
    compare_extra_checkpoints: list[str] = param.List(
        [],
        item_type=str,
        doc="Comparison: further SSL checkpoints as name=path, each an init of its own beside 'pretrained' "
        "(the same encoder flags), e.g. ssl_from_imagenet=outputs/DemoSimCLR/<run>/checkpoints/last.ckpt for SSL "
        "that started from ImageNet (--encoder_weights=imagenet): with --compare_baselines=random,imagenet the "
        "table holds random, ImageNet, SSL and SSL-from-ImageNet rows.",
    )
    label_fractions: list[float] = param.List(
        [1.0], item_type=float, doc="Comparison: the label fractions to train with, e.g. 0.01,0.1,1.0."
    )
    num_repeats: int = param.Integer(
        1, bounds=(1, None), doc="Comparison: runs per setting, with seeds random_seed, random_seed+1, ..."
    )
    compare_freeze_modes: list[str] = param.List(
        [],
        item_type=str,
        doc="Comparison: how each encoder is evaluated, any of frozen (linear probe, see --linear_probe_solver), "
        "finetuned, knn (each test image classified by the votes of its --knn_k nearest training embeddings, "
        "cosine similarity weighted by exp(similarity / --knn_temperature), as the kNN monitor: nothing is "
        "trained); empty: the mode --freeze_encoder sets. E.g. --compare_freeze_modes=frozen,knn.",
    )

    def validate(self, check_this_machine: bool = True) -> None:
        super().validate(check_this_machine)
        if self.linear_head_dataset_name is None:
            raise UserError("A classifier needs a labeled dataset: set --linear_head_dataset_name")
        local_weights_missing = self.local_weights_path is not None and not Path(self.local_weights_path).is_file()
        if check_this_machine and local_weights_missing:
            raise UserError(
                f"--local_weights_path={self.local_weights_path} does not exist: pass the SSL run's "
                "checkpoints/last.ckpt"
            )
        if check_this_machine and self.local_weights_path is not None and self.test_only_checkpoint is None:
            # A wrong checkpoint fails now, before datasets are decoded into the cache.
            self.classifier_encoder_spec()
        if self.local_weights_path is not None and self.encoder_weights != NO_WEIGHTS:
            hint = (
                "for an ImageNet baseline add --compare_baselines=random,imagenet (weights: --compare_imagenet_weights)"
                if self.compare_with_random_init
                else "the SSL checkpoint's weights are used"
            )
            raise UserError(
                f"--encoder_weights={self.encoder_weights} and --local_weights_path both set where the classifier's "
                f"encoder starts: leave out --encoder_weights ({hint})"
            )
        self.validate_comparison(check_this_machine)
        test_only_missing = self.test_only_checkpoint is not None and not Path(self.test_only_checkpoint).is_file()
        if check_this_machine and test_only_missing:
            raise UserError(
                f"--test_only_checkpoint={self.test_only_checkpoint} does not exist: pass a classifier run's "
                "checkpoints/best.ckpt"
            )
        for fraction in self.label_fractions:
            if not 0 < fraction <= 1:
                raise UserError(f"--label_fractions entry {fraction} is not in (0, 1]")
        for mode in self.compare_freeze_modes:
            if mode not in COMPARE_MODES:
                allowed = ", ".join(COMPARE_MODES)
                raise UserError(f"--compare_freeze_modes entry '{mode}' is not allowed. Allowed values: {allowed}")
        if not self.linear_probe_l2_grid or any(not 0 < l2 < math.inf for l2 in self.linear_probe_l2_grid):
            raise UserError(
                f"--linear_probe_l2_grid={','.join(f'{l2:g}' for l2 in self.linear_probe_l2_grid)} needs one or more "
                "L2 strengths > 0, e.g. 0.01,0.1,1"
            )
        if self.classifier_max_steps is not None and self.classifier_max_steps < self.num_epochs:
            raise UserError(
                f"--classifier_max_steps={self.classifier_max_steps} is fewer than --num_epochs={self.num_epochs}: "
                "every epoch (a validation and a checkpoint) takes at least one step; lower --num_epochs"
            )
        if self.compare_with_random_init and self.local_weights_path is None:
            raise UserError(
                "--compare_with_random_init needs --local_weights_path=<SSL run>/checkpoints/last.ckpt (the "
                "pretrained encoder to compare with a random one)"
            )
        if self.compare_with_random_init and self.test_only_checkpoint is not None:
            raise UserError("--compare_with_random_init trains its own classifiers: leave out --test_only_checkpoint")

    def validate_comparison(self, check_this_machine: bool) -> None:
        """The comparison's baselines and extra checkpoints (names, files, encoders), before any child runs."""
        for baseline in self.compare_baselines:
            if baseline not in COMPARE_BASELINES:
                allowed = ", ".join(COMPARE_BASELINES)
                raise UserError(f"--compare_baselines entry '{baseline}' is not allowed. Allowed values: {allowed}")
        weights = self.compare_imagenet_weights
        if check_this_machine and weights not in (NO_WEIGHTS, IMAGENET) and not Path(weights).is_file():
            raise UserError(
                f"--compare_imagenet_weights={weights} is not a file: pass imagenet or a state dict file (.pt/.pth/"
                ".safetensors)"
            )
        if weights == NO_WEIGHTS:
            raise UserError("--compare_imagenet_weights=none is a random encoder: use --compare_baselines=random")
        extras = self.extra_checkpoints()
        if self.compare_with_random_init and not self.compare_baselines and not extras:
            raise UserError(
                "--compare_baselines is empty and there are no --compare_extra_checkpoints: nothing to compare the SSL "
                "encoder with; e.g. --compare_baselines=random,imagenet"
            )
        for name, path in extras.items():
            if check_this_machine and self.compare_with_random_init:
                if not Path(path).is_file():
                    raise UserError(f"--compare_extra_checkpoints entry {name}={path}: no such file")
                recorded, _state = ssl_checkpoint_encoder(path, "--compare_extra_checkpoints")
                check_encoder_spec(recorded, self.encoder_spec(), path)

    def extra_checkpoints(self) -> dict[str, str]:
        """--compare_extra_checkpoints as {init name: SSL checkpoint}, in the given order, names checked."""
        extras: dict[str, str] = {}
        for entry in self.compare_extra_checkpoints:
            name, equals, path = (part.strip() for part in entry.partition("="))
            if not equals or not name or not path:
                raise UserError(
                    f"--compare_extra_checkpoints entry '{entry}' is not name=path (e.g. "
                    "--compare_extra_checkpoints=ssl_from_imagenet=outputs/<run>/checkpoints/last.ckpt)"
                )
            reserved = (*COMPARE_BASELINES, PRETRAINED_INIT)
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) or name in reserved:
                raise UserError(
                    f"--compare_extra_checkpoints name '{name}' must be letters, digits, '_' and '-' (it names child "
                    f"runs) and none of {', '.join(reserved)}"
                )
            if name in extras:
                raise UserError(f"--compare_extra_checkpoints names '{name}' twice: give each checkpoint its own name")
            extras[name] = path
        return extras

    def fits_linear_probe(self) -> bool:
        """Whether the head is fitted in closed form on cached embeddings (frozen encoder, lbfgs)."""
        return self.freeze_encoder and self.linear_probe_solver == "lbfgs"

    def training_budget(self, full_train_size: int) -> TrainingBudget:
        """AdamW's steps: from --classifier_max_steps, else one pass over the whole (not subset) training split per
        epoch, as many full batches as fit (at least one), per process."""
        if self.classifier_max_steps is not None:
            return TrainingBudget(self.num_epochs, math.ceil(self.classifier_max_steps / self.num_epochs))
        steps = full_train_size // (self.linear_head_batch_size * world_size(self))
        return TrainingBudget(self.num_epochs, max(1, steps))

    def create_datamodule(self, run_folder: Path | None = None) -> ClassifierDataModule:
        splits = self.linear_head_splits(run_folder)
        assert splits is not None
        full_train_size = len(splits.train)  # type: ignore[arg-type]
        if self.label_fraction < 1:
            splits = dataclasses.replace(splits, train=self.label_fraction_train(splits))
        used = [UsedDataset(str(self.linear_head_dataset_name), "classifier", splits)]
        config = self.augmentation("linear_head_augmentation_config")
        splits = self.image_storage([config]).store_splits(splits, str(self.linear_head_dataset_name))
        if self.fits_linear_probe():
            steps_per_epoch = 1  # the probe's one step fits the head; the batch only paces Lightning's loop
        else:
            budget = self.training_budget(full_train_size)
            steps_per_epoch = budget.steps_per_epoch
            logger.info(
                "Training budget: %d epochs x %d steps = %d optimizer steps of batch %d on %d training images, at "
                "most; early stopping after %s",
                budget.epochs,
                budget.steps_per_epoch,
                budget.total_steps,
                min(self.linear_head_batch_size, len(splits.train)),  # type: ignore[arg-type]
                len(splits.train),  # type: ignore[arg-type]
                f"{self.classifier_early_stopping_patience} epochs without improvement"
                if self.classifier_early_stopping_patience
                else "never",
            )
        datamodule = ClassifierDataModule(
            splits,
            train_stream=self.image_stream(config),
            eval_stream=self.image_stream(config.preprocess_only()),
            batch_size=self.linear_head_batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
            steps_per_epoch=steps_per_epoch,
        )
        datamodule.used_datasets = used
        return datamodule

    def label_fraction_train(self, splits: DatasetSplits) -> LabeledSubset:
        """The seeded, stratified, patient-level ``label_fraction`` subset of the training split."""
        train = splits.train
        labels = train.labels  # type: ignore[attr-defined]
        records = getattr(train, "records", None)
        groups = [record.patient_id or str(record.path) for record in records] if records is not None else None
        indices = label_fraction_subset(labels, groups, self.label_fraction, self.random_seed)
        if len(indices) == 0:
            raise UserError(
                f"--label_fraction={self.label_fraction} of {len(labels)} training images selects none: use a "
                f"fraction of at least {1 / max(1, len(labels)):.3g}"
            )
        subset = LabeledSubset(train, indices.tolist())
        counts = ", ".join(f"{k}={v}" for k, v in count_labels(subset.labels, splits.label_info).items())
        logger.info(
            "--label_fraction=%s: training on %d of %d training images (%s)",
            self.label_fraction,
            len(subset),
            len(labels),
            counts,
        )
        return subset

    def linear_probe_settings(self) -> LinearProbeSettings:
        return LinearProbeSettings(
            l2_grid=tuple(self.linear_probe_l2_grid),
            max_iterations=self.linear_probe_max_iterations,
            augmented_passes=self.linear_probe_augmented_passes,
        )

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> SSLClassifier:
        splits = datamodule.splits  # type: ignore[attr-defined]
        spec = self.classifier_encoder_spec()
        arguments = dict(
            encoder_name=spec.name,
            in_channels=spec.in_channels,
            encoder_spec=spec.as_dict(),
            task=splits.label_info.task,
            class_names=splits.label_info.class_names,
            freeze_encoder=self.freeze_encoder,
            learning_rate=effective_learning_rate(self, self.linear_head_batch_size),
            weight_decay=self.weight_decay,
            warmup_epochs=self.warmup_epochs,
            dropout=self.classifier_dropout,
            positive_weight=self.positive_weight(splits, self.use_balanced_binary_loss_for_classifier),
            channels_last=self.channels_last,
        )
        with seeded_initialisation(self.random_seed):
            if self.fits_linear_probe():
                module: SSLClassifier = LinearProbeClassifier(**arguments)
                module.settings = self.linear_probe_settings()  # type: ignore[attr-defined]
            else:
                module = SSLClassifier(**arguments)
        if self.test_only_checkpoint is not None:
            pass  # the test stage loads every weight from the checkpoint
        elif not self.resume:  # a resumed run's weights come from its own checkpoint
            self.load_starting_encoder(module.encoder)
        return module

    def classifier_encoder_spec(self) -> EncoderSpec:
        """The encoder the classifier is built as: the checkpoint's (--test_only_checkpoint's; --local_weights_path's
        after checking that --ssl_encoder, --in_channels and --encoder_options name it), else the flags'."""
        if self.test_only_checkpoint is not None:
            return classifier_checkpoint_encoder_spec(self.test_only_checkpoint)
        if self.local_weights_path is not None:
            return self.checked_ssl_encoder()[0]
        return self.encoder_spec()

    def checked_ssl_encoder(self) -> tuple[EncoderSpec, dict[str, torch.Tensor]]:
        """The SSL checkpoint's downstream encoder, spec and weights, once its spec is checked against the flags."""
        assert self.local_weights_path is not None
        recorded, state = ssl_checkpoint_encoder(self.local_weights_path)
        check_encoder_spec(recorded, self.encoder_spec(), self.local_weights_path)
        return recorded, state

    def pretrained_encoder_state(self) -> dict[str, torch.Tensor]:
        """The SSL checkpoint's downstream encoder weights (after the check of :meth:`classifier_encoder_spec`)."""
        return self.checked_ssl_encoder()[1]

    def load_starting_encoder(self, encoder: nn.Module) -> None:
        """Start ``encoder`` from the SSL checkpoint, else from --encoder_weights (none: it stays random)."""
        if self.local_weights_path is not None:
            encoder.load_state_dict(self.pretrained_encoder_state())
            logger.info("Encoder weights loaded from %s", self.local_weights_path)
        elif self.encoder_weights != NO_WEIGHTS:
            load_starting_weights(encoder, self.encoder_weights)
        else:
            logger.warning("No --local_weights_path: the classifier starts from a randomly initialised encoder")

    def create_encoder(self) -> nn.Module:
        """The encoder a classifier of this container starts from: the SSL checkpoint's, --encoder_weights', or the
        seeded random one (the same weights as the encoder of :meth:`create_lightning_module`)."""
        with seeded_initialisation(self.random_seed):
            encoder = create_encoder(self.classifier_encoder_spec())
        self.load_starting_encoder(encoder)
        return encoder

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        if self.fits_linear_probe() or self.classifier_early_stopping_patience == 0:
            return []
        # NaN (one class in the validation split) counts as no improvement instead of stopping at once.
        return [
            EarlyStopping(
                monitor=f"{METRIC_PREFIX}/val_auroc",
                mode="max",
                patience=self.classifier_early_stopping_patience,
                check_finite=False,
            )
        ]

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        return (f"{METRIC_PREFIX}/val_auroc", "max")

    def uses_sync_batchnorm(self) -> bool:
        return not self.freeze_encoder

    def has_test_stage(self) -> bool:
        return True

    def test_only_checkpoint_path(self) -> Path | None:
        return Path(self.test_only_checkpoint) if self.test_only_checkpoint is not None else None
