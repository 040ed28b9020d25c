"""The shared base of every SSL method: encoder, optimizer, schedule, logging of the SSL loss.

A method subclass builds its heads in ``__init__`` and implements ``ssl_loss(view0, view1)`` and, where
the encoder used downstream is not ``self.encoder`` (BYOL's target network), ``embedding_encoder``.

Batches: during training either ``{"ssl": ((view0, view1), labels), ...}`` (other keys, such as the
linear head's batch, belong to callbacks) or just ``((view0, view1), labels)``. Validation dataloader 0
is the SSL validation set; other validation dataloaders belong to callbacks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from innerssl.data.batches import SSL_BATCH_KEY, SSL_VAL_DATALOADER_INDEX
from innerssl.networks import create_encoder
from innerssl.networks.encoder import describe
from innerssl.networks.weights import NO_WEIGHTS, load_starting_weights
from innerssl.optim import WarmupCosineModule
from innerssl.outputs.checkpoints import CHECKPOINT_KEY, checkpoint_metadata


def ssl_views(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The two augmented views of an SSL batch, in either batch format."""
    if isinstance(batch, dict):
        batch = batch[SSL_BATCH_KEY]
    views, _labels = batch
    return views[0], views[1]


class SSLModule(WarmupCosineModule):
    """Base LightningModule of the SSL methods.

    ``optimizer_name`` is ``adamw`` or ``lars`` (with ``lars_momentum`` and ``lars_trust_coefficient``), see
    ``WarmupCosineModule.configure_warmup_cosine``. Subclasses declare their own arguments and pass these on
    as keywords (``**base_arguments``); all of them are saved as hyperparameters.
    """

    method_name: ClassVar[str] = ""

    def __init__(
        self,
        encoder_name: str = "resnet18",
        in_channels: int = 1,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 10,
        channels_last: bool = False,
        optimizer_name: str = "adamw",
        lars_momentum: float = 0.9,
        lars_trust_coefficient: float = 1e-3,
        encoder_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # Records the arguments of this and every subclass __init__ in the checkpoint.
        self.save_hyperparameters()
        self.encoder = create_encoder(encoder_name, in_channels, **(encoder_options or {}))
        self.feature_dim: int = self.encoder.feature_dim

    def load_encoder_weights(self, weights: str) -> None:
        """Start the encoder from ``weights`` (none, imagenet or a file; innerssl.networks.weights), and every
        copy of it the method keeps (a momentum target) from the same weights."""
        if weights in ("", NO_WEIGHTS):
            return
        load_starting_weights(self.encoder, weights)
        self.on_encoder_weights_loaded()

    def on_encoder_weights_loaded(self) -> None:
        """Methods whose other networks copy the encoder refresh them here."""

    def embedding_encoder(self) -> nn.Module:
        """The encoder whose embeddings are monitored and handed to the classifier."""
        return self.encoder

    def embedding_encoder_prefix(self) -> str:
        """The state_dict key prefix of ``embedding_encoder()`` (recorded in checkpoints for the classifier)."""
        encoder = self.embedding_encoder()
        return next(f"{name}." for name, child in self.named_children() if child is encoder)

    def trainable_modules(self) -> list[nn.Module]:
        return [self]

    def ssl_loss(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def on_train_batch_start_ssl(self) -> None:
        """Per-step bookkeeping before the loss (e.g. BYOL's momentum update)."""

    def _prepare(self, view: torch.Tensor) -> torch.Tensor:
        if self.hparams.get("channels_last"):
            return view.contiguous(memory_format=torch.channels_last)
        return view

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.on_train_batch_start_ssl()
        view0, view1 = ssl_views(batch)
        loss = self.ssl_loss(self._prepare(view0), self._prepare(view1))
        self.log("ssl/train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_learning_rate("ssl")
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != SSL_VAL_DATALOADER_INDEX:
            return
        view0, view1 = ssl_views(batch)
        loss = self.ssl_loss(self._prepare(view0), self._prepare(view1))
        self.log("ssl/val_loss", loss, on_epoch=True, sync_dist=True, add_dataloader_idx=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = checkpoint_metadata(
            "ssl",
            self.hparams.encoder_name,
            self.hparams.in_channels,
            self.method_name,
            encoder_prefix=self.embedding_encoder_prefix(),
            encoder_spec=describe(self.encoder).as_dict(),
        )

    def configure_optimizers(self) -> dict:
        return self.configure_warmup_cosine(self.trainable_modules())
