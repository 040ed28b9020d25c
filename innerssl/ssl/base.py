"""The shared base of every SSL method: encoder, optimizer, schedule, logging of the SSL loss.

A method subclass registers itself (``@register_method``, innerssl.ssl.registry), builds its heads in
``__init__``, whose keyword arguments (with the paper's defaults, documented in ``parameter_docs``) are its
command-line parameters (``--<flag_prefix>_<argument>``, innerssl.ssl.parameters), declares the views it trains
on (``view_groups``, a classmethod of its hyperparameters, so the data pipeline can make them before the module
exists; default: two views of the augmentation config's size) and implements ``ssl_loss(*views)``, which
receives the views of a batch in the order of the groups; where the encoder used downstream is not
``self.encoder`` (BYOL's target network), it also implements ``embedding_encoder``.

Batches: during training either ``{"ssl": (views, labels), ...}`` (other keys, such as the linear head's
batch, belong to callbacks) or just ``(views, labels)``, ``views`` a sequence of view batches (or a single
batch: one view). Validation dataloader 0 is the SSL validation set, with the same views as training; other
validation dataloaders belong to callbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from innerssl.augment.views import TWO_VIEWS, ViewGroup, total_views
from innerssl.batches import SSL_BATCH_KEY, SSL_VAL_DATALOADER_INDEX
from innerssl.errors import UserError
from innerssl.networks import create_encoder
from innerssl.networks.encoder import describe
from innerssl.networks.weights import NO_WEIGHTS, load_starting_weights
from innerssl.optim import WarmupCosineModule
from innerssl.outputs.checkpoints import CHECKPOINT_KEY, checkpoint_metadata


def ssl_views(batch: Any) -> list[torch.Tensor]:
    """The augmented views of an SSL batch, in either batch format; a plain image batch is one view."""
    if isinstance(batch, dict):
        batch = batch[SSL_BATCH_KEY]
    views, _labels = batch
    if isinstance(views, torch.Tensor):
        return [views]
    return list(views)


class SSLModule(WarmupCosineModule):
    """Base LightningModule of the SSL methods.

    ``optimizer_name`` is ``adamw`` or ``lars`` (with ``lars_momentum`` and ``lars_trust_coefficient``), see
    ``WarmupCosineModule.configure_warmup_cosine``. Subclasses declare their own arguments and pass these on
    as keywords (``**base_arguments``); all of them are saved as hyperparameters.
    """

    method_name: ClassVar[str] = ""
    """The registry name (``--ssl_training_type``)."""
    flag_prefix: ClassVar[str] = ""
    """Prefix of the method's flags: ``--<flag_prefix>_<argument>`` (innerssl.ssl.parameters)."""
    encoder_layouts: ClassVar[tuple[str, ...]] = ("map", "tokens")
    """The encoder outputs the method can train (``feature_layout``: CNN feature maps, ViT tokens)."""
    parameter_docs: ClassVar[dict[str, str]] = {}
    """Help text of each of the method's own ``__init__`` arguments (every one needs one)."""
    parameter_bounds: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    """Inclusive (min, max) of numeric arguments; None: unbounded."""

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
        type(self).check_encoder(self.encoder, self.hyperparameters_with_defaults(self.hparams))
        self.feature_dim: int = self.encoder.feature_dim
        self.declared_views: tuple[ViewGroup, ...] = type(self).view_groups(self.hparams)
        """The views ``ssl_loss`` takes, from this module's own hyperparameters."""

    @classmethod
    def view_groups(cls, hyperparameters: Mapping[str, Any] | None = None) -> tuple[ViewGroup, ...]:
        """The views the method trains on, given its hyperparameters (``__init__``'s keyword arguments; left-out
        ones take their defaults); ``ssl_loss`` receives the groups' views in this order. Default: two views of
        the augmentation config's size and crop scale, as BYOL, SimCLR, VICReg, Barlow Twins and MoCo v3 use."""
        return TWO_VIEWS

    @classmethod
    def check_encoder(cls, encoder: nn.Module, hyperparameters: Mapping[str, Any]) -> None:
        """Refuse, with a UserError naming the flag to set, an encoder this method cannot train. The container calls
        it on an encoder built on the meta device before any data is read, and ``__init__`` calls it again, so a
        wrong combination costs no decoding. Default: the encoder's ``feature_layout`` is in ``encoder_layouts``;
        methods with further needs extend it."""
        layout = getattr(encoder, "feature_layout", "map")
        if layout not in cls.encoder_layouts:
            names = {"map": "CNN feature maps", "tokens": "ViT tokens"}
            takes = " or ".join(names.get(known, known) for known in cls.encoder_layouts)
            raise UserError(
                f"{cls.method_name} trains encoders with {takes}, and --ssl_encoder="
                f"{hyperparameters.get('encoder_name')} gives {names.get(layout, layout)}: choose another --ssl_encoder"
            )

    @classmethod
    def hyperparameters_with_defaults(cls, hyperparameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``hyperparameters`` completed with the defaults of every ``__init__`` in the class hierarchy."""
        defaults: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if issubclass(klass, SSLModule) and "__init__" in vars(klass):
                for name, parameter in inspect.signature(klass.__init__).parameters.items():
                    if parameter.default is not inspect.Parameter.empty:
                        defaults[name] = parameter.default
        return {**defaults, **dict(hyperparameters or {})}

    def checked_views(self, views: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """``views`` when there are as many as the method declared; a mismatch is a wiring bug, said plainly."""
        expected = total_views(self.declared_views)
        if len(views) != expected:
            groups = ", ".join(f"{group.count} {group.role}" for group in self.declared_views)
            raise ValueError(f"{self.method_name} takes {expected} views per image ({groups}), got {len(views)}")
        return views

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

    def ssl_loss(self, *views: torch.Tensor) -> torch.Tensor:
        """The loss of one batch's views, in the order of ``view_groups`` (``ssl_loss(view0, view1)`` for the
        two-view methods)."""
        raise NotImplementedError

    def on_train_batch_start_ssl(self) -> None:
        """Per-step bookkeeping before the loss (e.g. BYOL's momentum update)."""

    def _prepare(self, view: torch.Tensor) -> torch.Tensor:
        if self.hparams.get("channels_last"):
            return view.contiguous(memory_format=torch.channels_last)
        return view

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.on_train_batch_start_ssl()
        loss = self.ssl_loss(*(self._prepare(view) for view in ssl_views(batch)))
        self.log("ssl/train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_learning_rate("ssl")
        return loss

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx != SSL_VAL_DATALOADER_INDEX:
            return
        loss = self.ssl_loss(*(self._prepare(view) for view in ssl_views(batch)))
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
