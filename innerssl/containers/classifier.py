"""SSLClassifierContainer: a classifier from an SSL checkpoint's encoder (linear probe or finetuning)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import param
import pytorch_lightning as pl

from innerssl.containers.ssl import SSLContainer
from innerssl.data.datamodule import ClassifierDataModule
from innerssl.data.datasets.base import DatasetSplits, LabeledSubset, count_labels
from innerssl.data.splits import label_fraction_subset
from innerssl.distributed import effective_learning_rate
from innerssl.errors import UserError
from innerssl.eval.classifier import METRIC_PREFIX, SSLClassifier
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint

logger = logging.getLogger(__name__)

FREEZE_MODES = ("frozen", "finetuned")


class SSLClassifierContainer(SSLContainer):
    """Trains a classifier on ``linear_head_dataset_name`` from the encoder of an SSL checkpoint.

    The labeled dataset's folder is the first of ``extra_local_dataset_paths`` if given, else
    ``local_dataset``. Without ``local_weights_path`` the encoder starts from random weights (the baseline
    that shows what pretraining adds).
    """

    local_weights_path: str | None = param.String(
        None,
        allow_None=True,
        doc="SSL checkpoint (last.ckpt or best.ckpt of an SSL run) whose encoder the classifier starts from. "
        "None: a randomly initialised encoder.",
    )
    freeze_encoder: bool = param.Boolean(
        True, doc="Train only a linear head on frozen encoder features (false: finetune the whole network)."
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
        doc="Instead of one run, compare classifiers from the SSL encoder (--local_weights_path, required) and from "
        "a random encoder for every freeze mode x label fraction x repeat; writes comparison.md, comparison.png "
        "and comparison.csv (test metrics of the best-on-validation checkpoints).",
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
        doc="Comparison: frozen (linear probe) and/or finetuned; empty: the mode --freeze_encoder sets. Both ways: "
        "--compare_freeze_modes=frozen,finetuned.",
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
            encoder_state_from_ssl_checkpoint(self.local_weights_path, self.ssl_encoder, self.in_channels)
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
            if mode not in FREEZE_MODES:
                allowed = ", ".join(FREEZE_MODES)
                raise UserError(f"--compare_freeze_modes entry '{mode}' is not allowed. Allowed values: {allowed}")
        if self.compare_with_random_init and self.local_weights_path is None:
            raise UserError(
                "--compare_with_random_init needs --local_weights_path=<SSL run>/checkpoints/last.ckpt (the "
                "pretrained encoder to compare with a random one)"
            )
        if self.compare_with_random_init and self.test_only_checkpoint is not None:
            raise UserError("--compare_with_random_init trains its own classifiers: leave out --test_only_checkpoint")

    def labeled_dataset_root(self) -> tuple[Path | None, str]:
        if self.extra_local_dataset_paths:
            return Path(self.extra_local_dataset_paths[0]), "--extra_local_dataset_paths"
        return (Path(self.local_dataset) if self.local_dataset else None), "--local_dataset"

    def create_datamodule(self, run_folder: Path | None = None) -> ClassifierDataModule:
        splits = self.linear_head_splits(run_folder)
        assert splits is not None
        if self.label_fraction < 1:
            splits = dataclasses.replace(splits, train=self.label_fraction_train(splits))
        config = self.augmentation("linear_head_augmentation_config")
        splits = self.image_storage([config]).store_splits(splits, str(self.linear_head_dataset_name))
        return ClassifierDataModule(
            splits,
            train_stream=self.image_stream(config),
            eval_stream=self.image_stream(config.preprocess_only()),
            batch_size=self.linear_head_batch_size,
            num_workers=self.num_workers,
            seed=self.random_seed,
        )

    def label_fraction_train(self, splits: DatasetSplits) -> LabeledSubset:
        """The seeded, stratified, patient-level ``label_fraction`` subset of the training split."""
        train = splits.train
        labels = train.labels  # type: ignore[attr-defined]
        records = getattr(train, "records", None)
        groups = [record.patient_id or str(record.path) for record in records] if records is not None else None
        indices = label_fraction_subset(labels, groups, self.label_fraction, self.random_seed)
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

    def create_lightning_module(self, datamodule: pl.LightningDataModule) -> SSLClassifier:
        splits = datamodule.splits  # type: ignore[attr-defined]
        module = SSLClassifier(
            encoder_name=self.ssl_encoder,
            in_channels=self.in_channels,
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
        if self.test_only_checkpoint is not None:
            pass  # the test stage loads every weight from the checkpoint
        elif self.local_weights_path is not None and not self.resume:
            state = encoder_state_from_ssl_checkpoint(self.local_weights_path, self.ssl_encoder, self.in_channels)
            module.encoder.load_state_dict(state)
            logger.info("Encoder weights loaded from %s", self.local_weights_path)
        elif self.local_weights_path is None:
            logger.warning("No --local_weights_path: the classifier starts from a randomly initialised encoder")
        return module

    def create_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        return []

    def checkpoint_monitor(self) -> tuple[str, str] | None:
        return (f"{METRIC_PREFIX}/val_auroc", "max")

    def uses_sync_batchnorm(self) -> bool:
        return not self.freeze_encoder

    def has_test_stage(self) -> bool:
        return True

    def test_only_checkpoint_path(self) -> Path | None:
        return Path(self.test_only_checkpoint) if self.test_only_checkpoint is not None else None
