"""The test stage of a segmentation run: every whole test image segmented by tiles, its predicted mask written to
``per_image/`` (TIFF / PNG / NIfTI as the input), Dice per class per image in ``test_metrics.csv`` and the means in
``test_metrics_mean.csv``. Predictions of preprocessed volumes (--crop_foreground, --spacing, ...) are written back
in the source file's grid; Dice is computed on the preprocessed grid."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from innerssl.eval.restoration_metrics import mean_dice
from innerssl.eval.segmentation import PREFIX, SegmentationModule
from innerssl.outputs.per_image import PER_IMAGE_FOLDER, write_label_map, write_mean_table, write_metrics_table

logger = logging.getLogger(__name__)

TEST_METRICS_CSV = "test_metrics.csv"
TEST_METRICS_MEAN_CSV = "test_metrics_mean.csv"


def run_segmentation_test(
    module: SegmentationModule, test_images: list[Any], output_root: Path, device: torch.device
) -> dict[str, float]:
    """Segment every test image (``LoadedImage``s with label targets); returns ``segmentation/test_dice`` (the mean
    over images of each image's mean Dice over its present classes) and ``segmentation/test_dice_class<k>``."""
    module = module.to(device).eval()
    rows: list[dict[str, Any]] = []
    for loaded in tqdm(test_images, desc="Test images", unit="image"):
        with torch.no_grad():
            labels = module.predict_labels(loaded.image.to(device)).cpu()
        suffix, reference, affine = loaded.prediction_format()
        write_label_map(
            labels if loaded.geometry is None else loaded.geometry.restore(labels, labels=True),
            output_root / PER_IMAGE_FOLDER,
            loaded.name,
            suffix,
            module.spec.spatial_dims,
            reference=reference,
            affine=affine,
        )
        if loaded.target is None:
            continue
        per_class = module.dice_of(labels, loaded.target)
        rows.append(
            {
                "name": loaded.name,
                "dice": mean_dice(per_class),
                **{f"dice_class{label}": value for label, value in per_class.items()},
            }
        )
    if not rows:
        return {}
    write_metrics_table(rows, output_root / TEST_METRICS_CSV)
    write_mean_table(rows, output_root / TEST_METRICS_MEAN_CSV)
    keys = [key for key in rows[0] if key != "name"]
    means = {
        key: float(np.nanmean([row[key] for row in rows]))
        if any(not math.isnan(row[key]) for row in rows)
        else math.nan
        for key in keys
    }
    logger.info("Test (%d images): Dice %.4f", len(rows), means["dice"])
    return {f"{PREFIX}/test_{key}": value for key, value in means.items()}
