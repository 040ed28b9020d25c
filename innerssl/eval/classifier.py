"""Classifier on top of an SSL encoder: a linear probe (frozen encoder) or full finetuning.

The encoder is built from ``encoder_spec`` (an :class:`~innerssl.networks.EncoderSpec` as a dict: name, channels,
spatial dims, construction options such as a ViT's img_size and patch_size), a hyperparameter and part of the
checkpoint metadata, so a classifier checkpoint rebuilds its encoder on its own. Checkpoints from before the spec
carry only ``encoder_name`` and ``in_channels``, which then describe the encoder.

The classifier knows nothing about the SSL method beyond the encoder weights it is given. With a frozen
encoder the encoder runs in eval mode under ``no_grad`` and is left out of the optimizer, so its
weights and BatchNorm statistics stay bit-identical.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.metrics import EpochPredictions, classification_loss
from innerssl.eval.online_linear import frozen_eval_mode
from innerssl.networks import EncoderSpec, create_encoder
from innerssl.optim import WarmupCosineModule
from innerssl.outputs.checkpoints import CHECKPOINT_KEY, checkpoint_metadata

METRIC_PREFIX = "classifier"


class SSLClassifier(WarmupCosineModule):
    def __init__(
        self,
        encoder_name: str,
        in_channels: int,
        task: str,
        class_names: tuple[str, ...],
        freeze_encoder: bool = True,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        warmup_epochs: float = 0,
        dropout: float = 0.0,
        positive_weight: float | None = None,
        channels_last: bool = False,
        encoder_spec: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if encoder_spec is None:  # a checkpoint from before the spec: the encoder had no options
            encoder_spec = EncoderSpec(encoder_name, in_channels).as_dict()
        self.save_hyperparameters()
        self.label_info = LabelInfo(task, tuple(class_names))  # type: ignore[arg-type]
        self.encoder = create_encoder(self.encoder_spec)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.feature_dim, self.label_info.num_outputs))
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self._predictions = {split: EpochPredictions(self.label_info) for split in ("train", "val", "test")}
        self.test_predictions: tuple[torch.Tensor, torch.Tensor] | None = None
        """(probabilities, targets) of the last test epoch on this process, in the test loader's order."""

    @property
    def encoder_spec(self) -> EncoderSpec:
        """The spec the encoder is built from (``encoder_spec`` wins over ``encoder_name`` / ``in_channels``)."""
        return EncoderSpec.from_dict(self.hparams.encoder_spec)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.hparams.freeze_encoder:
            with frozen_eval_mode(self.encoder):
                features = self.encoder(images)
        else:
            features = self.encoder(images)
        return self.head(features.float())

    def _step(self, split: str, batch: Any) -> torch.Tensor:
        images, targets = batch
        logits = self(images)
        loss = classification_loss(logits, targets, self.label_info, self.hparams.positive_weight)
        self._predictions[split].add(logits, targets, loss)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self._step("train", batch)
        self.log(f"{METRIC_PREFIX}/train_loss_step", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log_learning_rate(METRIC_PREFIX)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step("test", batch)

    def _log_epoch(self, split: str) -> None:
        self._predictions[split].log_epoch(self, METRIC_PREFIX, split, prog_bar_metric="auroc")

    def on_train_epoch_start(self) -> None:
        self._predictions["train"].reset()

    def on_validation_epoch_start(self) -> None:
        self._predictions["val"].reset()

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")  # no-op when validation already logged them (see on_validation_epoch_end)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")
        if not self.trainer.sanity_checking:
            # Validation runs after the epoch's last training batch but before callbacks' on_train_epoch_end
            # (which write metrics.csv) and the module's own: log the training metrics now so they land
            # in this epoch's row.
            self._log_epoch("train")

    def on_test_epoch_start(self) -> None:
        self._predictions["test"].reset()
        self.test_predictions = None

    def on_test_epoch_end(self) -> None:
        if len(self._predictions["test"]):
            self.test_predictions = self._predictions["test"].tensors()
        self._log_epoch("test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        spec = self.encoder_spec
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(
            "classifier", spec.name, spec.in_channels, encoder_spec=spec.as_dict()
        )

    def configure_optimizers(self) -> dict:
        return self.configure_warmup_cosine([self.head] if self.hparams.freeze_encoder else [self.encoder, self.head])
