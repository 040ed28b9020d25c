"""Semantic segmentation with a dense network (2D and 3D): Dice + cross-entropy loss on random patches, Dice per
class on whole validation images by tiled inference, every epoch.

Logged: ``segmentation/train_loss``, ``segmentation/val_dice`` (mean over the classes present, background excluded
unless ``include_background``) and ``segmentation/val_dice_<class>``. Classes absent from both prediction and
ground truth of an image do not count for it (NaN, not 1).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from torch import Tensor

from innerssl.eval.dense_module import DenseNetworkModule
from innerssl.eval.restoration_metrics import dice_per_class, mean_dice

PREFIX = "segmentation"


class SegmentationModule(DenseNetworkModule):
    checkpoint_kind: ClassVar[str] = "segmentation"

    def __init__(
        self,
        network_spec: dict[str, Any],
        num_classes: int = 2,
        include_background: bool = False,
        frozen_keys: tuple[str, ...] = (),
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: float = 0,
        test_overlap: float = 0.25,
        test_padding: int = 0,
        tile_batch_size: int = 4,
        output_suffix: str = ".png",
    ) -> None:
        super().__init__(
            network_spec, learning_rate, weight_decay, warmup_epochs, test_overlap, test_padding, tile_batch_size
        )
        self.save_hyperparameters()
        from monai.losses import DiceCELoss

        self.loss_function = DiceCELoss(to_onehot_y=True, softmax=True, include_background=True)
        self.freeze(frozen_keys)

    def freeze(self, keys: tuple[str, ...]) -> None:
        """--freeze_encoder: the pretrained encoder's parameters (network state-dict keys) stay as loaded."""
        wanted = set(keys)
        for name, parameter in self.network.named_parameters():
            if name in wanted:
                parameter.requires_grad_(False)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        logits = self.network(batch["image"])
        loss = self.loss_function(logits, batch["target"].unsqueeze(1))
        self.log(f"{PREFIX}/train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log_learning_rate(PREFIX)
        return loss

    def predict_labels(self, image: Tensor) -> Tensor:
        """The label map ``(*spatial)`` of one whole ``(C, *spatial)`` image."""
        return self.tiles(image, self.network).argmax(dim=0)

    def dice_of(self, labels: Tensor, target: Tensor) -> dict[int, float]:
        return dice_per_class(
            labels, target, self.hparams.num_classes, include_background=self.hparams.include_background
        )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        labels = self.predict_labels(batch["image"][0])
        per_class = self.dice_of(labels, batch["target"][0])
        mean = mean_dice(per_class)
        if not math.isnan(mean):
            self.log(f"{PREFIX}/val_dice", mean, on_epoch=True, batch_size=1, sync_dist=True)
        for label, value in per_class.items():
            if not math.isnan(value):
                self.log(f"{PREFIX}/val_dice_class{label}", value, on_epoch=True, batch_size=1, sync_dist=True)

    def checkpoint_info(self) -> dict[str, Any]:
        return {**super().checkpoint_info(), "num_classes": self.hparams.num_classes}
