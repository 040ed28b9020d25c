"""The classifier container's training budget (the same steps at every label fraction), early stopping, the
learning-rate schedule over those steps, and its parameter checks."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.data.datamodule import ClassifierDataModule
from innerssl.data.datasets.base import DatasetSplits, LabelInfo
from innerssl.data.pipeline import ImageStream
from innerssl.errors import UserError
from innerssl.eval.linear_probe import LinearProbeClassifier
from innerssl.optim import warmup_cosine_factor_of_fraction
from innerssl.registry import find_model
from innerssl.training import train
from tests.conftest import tiny_classifier_flags


def classifier(tmp_path, **overrides) -> SSLClassifierContainer:
    container = find_model("DemoClassifier", [])()
    flags = dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, **overrides))
    container.apply_flags(flags)
    return container


def test_steps_per_epoch_do_not_shrink_with_the_label_fraction(tmp_path):
    def steps(**overrides) -> int:
        datamodule = classifier(tmp_path, linear_probe_solver="adamw", **overrides).create_datamodule()
        return len(datamodule.train_dataloader())

    full = steps(label_fraction=1.0)
    assert full == 76 // 16  # one pass over the 76 demo training images in full batches of 16
    assert steps(label_fraction=0.1) == steps(label_fraction=0.5) == full
    assert steps(label_fraction=0.1, classifier_max_steps=25, num_epochs=5) == 5
    assert steps(label_fraction=0.1, classifier_max_steps=26, num_epochs=5) == 6  # rounded up
    probe = classifier(tmp_path, label_fraction=0.1)
    assert len(probe.create_datamodule().train_dataloader()) == 1  # the probe's one fitting step
    assert probe.create_callbacks(probe.create_datamodule()) == []


def test_a_subset_smaller_than_a_batch_is_cycled_without_repeating_an_image_in_a_batch():
    # Image i is filled with i / 10 (images are in [0, 1]), so a batch says which images it holds.
    images = (torch.arange(5, dtype=torch.float32) / 10).reshape(5, 1, 1, 1).expand(5, 1, 8, 8).contiguous()
    dataset = TensorDataset(images, torch.tensor([0, 1, 0, 1, 0]))
    stream = ImageStream(_no_augmentation(), in_channels=1, augment_on_device=False)
    datamodule = ClassifierDataModule(
        DatasetSplits(dataset, dataset, None, LabelInfo("binary", ("a", "b"))),
        train_stream=stream,
        eval_stream=stream,
        batch_size=16,
        steps_per_epoch=4,
    )
    batches = [(images[:, 0, 0, 0] * 10).round().long().tolist() for images, _ in datamodule.train_dataloader()]
    assert len(batches) == 4
    assert all(sorted(batch) == [0, 1, 2, 3, 4] for batch in batches)  # every image once per batch
    assert len({tuple(batch) for batch in batches}) > 1  # reshuffled at every pass


def _no_augmentation():  # noqa: ANN202
    from innerssl.augment.config import parse_augmentation_config

    return parse_augmentation_config({}, "no augmentation")


def test_adamw_classifiers_take_the_same_steps_at_every_fraction_and_stop_early(tmp_path):
    def run(name: str, **overrides) -> pd.DataFrame:
        flags = {"num_epochs": 2, **overrides}
        container = classifier(tmp_path, run_name=name, linear_probe_solver="adamw", **flags)
        result = train(container, "DemoClassifier")
        assert 0 <= result.test_metrics["classifier/test_auroc"] <= 1
        return pd.read_csv(result.folder.metrics_csv)

    full, subset = run("full", label_fraction=1.0), run("subset", label_fraction=0.1)
    assert list(full["step"]) == list(subset["step"]) == [4, 8]
    # No learning: validation AUROC never improves on the first epoch's, so patience 1 stops after the second.
    frozen_in_place = run("stopped", learning_rate=0.0, num_epochs=5, classifier_early_stopping_patience=1)
    assert list(frozen_in_place["epoch"]) == [0, 1]


class LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.rates: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_learning_rate_follows_the_steps_of_the_budget_on_a_small_subset(tmp_path):
    container = classifier(tmp_path, linear_probe_solver="adamw", label_fraction=0.1, num_epochs=3, warmup_epochs=1)
    datamodule = container.create_datamodule()
    module = container.create_lightning_module(datamodule)
    recorder = LearningRates()
    trainer = pl.Trainer(
        max_epochs=container.num_epochs,
        callbacks=[recorder],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=datamodule)
    total = 3 * 4  # 3 epochs of one pass over the whole split's 76 images in batches of 16
    assert len(recorder.rates) == trainer.global_step == total
    factors = [warmup_cosine_factor_of_fraction(step / total, 1 / 3) for step in range(total)]  # warmup: 1 of 3 epochs
    expected = [container.learning_rate * factor for factor in factors]
    assert recorder.rates == pytest.approx(expected, rel=1e-6)


def test_parameter_checks(tmp_path):
    container = classifier(tmp_path, compare_freeze_modes="frozen,knn,finetuned")
    container.validate()
    for flags, message in (
        ({"compare_freeze_modes": "frozen,linear"}, "Allowed values: frozen, finetuned, knn"),
        ({"linear_probe_l2_grid": "0.1,0"}, "--linear_probe_l2_grid=0.1,0"),
        ({"classifier_max_steps": "3", "num_epochs": "5"}, "--classifier_max_steps=3 is fewer than --num_epochs=5"),
    ):
        with pytest.raises(UserError, match=message):
            classifier(tmp_path, **flags).validate()


def test_the_frozen_module_is_a_linear_probe_only_with_the_lbfgs_solver(tmp_path):
    datamodule = classifier(tmp_path).create_datamodule()
    probe = classifier(tmp_path, linear_probe_l2_grid="0.5,2").create_lightning_module(datamodule)
    assert isinstance(probe, LinearProbeClassifier) and probe.settings.l2_grid == (0.5, 2.0)
    # The checkpoint's hyperparameters stay those of an ordinary classifier (export and tests rebuild from them).
    assert "l2_grid" not in probe.hparams and "settings" not in probe.hparams
    adamw = classifier(tmp_path, linear_probe_solver="adamw").create_lightning_module(datamodule)
    finetuned = classifier(tmp_path, freeze_encoder="false").create_lightning_module(datamodule)
    assert not isinstance(adamw, LinearProbeClassifier) and not isinstance(finetuned, LinearProbeClassifier)
    assert math.isclose(adamw.hparams.learning_rate, 1e-2)
