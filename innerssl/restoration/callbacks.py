"""aug/ previews of restoration runs: a few training patches as the network gets them beside their targets."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch

from innerssl.outputs.augmentation_previews import AUGMENTATION_FOLDER
from innerssl.outputs.restoration_checks import write_restoration_preview

logger = logging.getLogger(__name__)

PREVIEW_FILE = "restoration_inputs.png"
PREVIEW_PATCHES = 8


class RestorationPreviews(pl.Callback):
    """Writes ``aug/restoration_inputs.png`` once training starts (global rank 0)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not trainer.is_global_zero or datamodule is None:
            return
        dataset = datamodule.train_dataloader().dataset
        items = [dataset[index] for index in range(min(PREVIEW_PATCHES, len(dataset)))]
        images = torch.stack([item["image"] for item in items]).to(pl_module.device)
        targets = torch.stack([item["target"] for item in items]).to(pl_module.device) if "target" in items[0] else None
        generator = torch.Generator(device=pl_module.device)
        generator.manual_seed(0)
        with torch.no_grad():
            inputs, wanted = pl_module.task.preview_inputs(pl_module.network, images, targets, generator)
        path = Path(trainer.default_root_dir) / AUGMENTATION_FOLDER / PREVIEW_FILE
        write_restoration_preview(
            path, inputs.cpu(), wanted.cpu(), f"{pl_module.hparams.task_name}: network input | target"
        )
        logger.info("Restoration previews: %s", path)
