"""The test stage of a restoration run: every whole test image restored by the trained network, BiaPy's outputs.

Written into the run folder: ``per_image/<name>.<tif|png|nii.gz>`` (the restored image, full size, merged from
tiles; TIFF for TIFF data; preprocessed volumes back in the source file's grid, see
:mod:`innerssl.data.volume_preprocessing`; metrics on the preprocessed grid), ``test_metrics.csv`` (per image: PSNR,
SSIM, MAE, MSE of the restoration and of the baseline), ``test_metrics_mean.csv`` and ``test_metrics.png`` (restored
vs baseline), and for masking ``mae_checks/test/`` for every test image.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from innerssl.outputs.per_image import PER_IMAGE_FOLDER, plot_metric_comparison, write_image, write_mean_table
from innerssl.outputs.per_image import write_metrics_table as write_table
from innerssl.outputs.restoration_checks import MAE_CHECKS_FOLDER
from innerssl.restoration.module import PREFIX, RestorationModule

logger = logging.getLogger(__name__)

TEST_METRICS_CSV = "test_metrics.csv"
TEST_METRICS_MEAN_CSV = "test_metrics_mean.csv"
TEST_METRICS_PNG = "test_metrics.png"
BASELINE_TITLES = {"input": "degraded input", "mean_fill": "mean-filled masked image"}


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The mean of every numeric column over the images (infinite PSNRs of exact restorations stay infinite)."""
    keys = [key for key in rows[0] if key != "name"]
    return {key: float(np.mean([float(row[key]) for row in rows])) for key in keys}


def run_restoration_test(
    module: RestorationModule, test_images: list[Any], output_root: Path, device: torch.device
) -> dict[str, float]:
    """Restore every test image (``LoadedImage``s), write the outputs, return the mean metrics
    (``restoration/test_<metric>`` and ``restoration/test_<baseline>_<metric>``)."""
    module = module.to(device).eval()
    rows: list[dict[str, Any]] = []
    spatial_dims = module.spec.spatial_dims
    for index, loaded in enumerate(tqdm(test_images, desc="Test images", unit="image")):
        image = loaded.image.to(device)
        target = None if loaded.target is None else loaded.target.to(device)
        batch = {
            "image": image[None],
            "index": torch.tensor([index]),
            "name": [loaded.name],
            **({} if target is None else {"target": target[None]}),
        }
        with torch.no_grad():
            result = module.restore_image(batch)
        rows.append({"name": loaded.name, **module.metrics_of(result)})
        restored = result.restored.cpu()
        suffix, reference, affine = loaded.prediction_format()
        write_image(
            restored if loaded.geometry is None else loaded.geometry.restore(restored, labels=False),
            output_root / PER_IMAGE_FOLDER,
            loaded.name,
            suffix,
            spatial_dims,
            reference=reference,
            affine=affine,
        )
        if module.task.token_networks:
            module.write_checks(result, batch, output_root / MAE_CHECKS_FOLDER / "test", epoch=None)
    if not rows:
        return {}
    write_table(rows, output_root / TEST_METRICS_CSV)
    write_mean_table(rows, output_root / TEST_METRICS_MEAN_CSV)
    means = mean_metrics(rows)
    baseline = module.task.baseline_name
    restored_means = {key: value for key, value in means.items() if not key.startswith(f"{baseline}_")}
    baseline_means = {key[len(baseline) + 1 :]: value for key, value in means.items() if key.startswith(f"{baseline}_")}
    plot_metric_comparison(
        restored_means,
        baseline_means,
        output_root / TEST_METRICS_PNG,
        f"Test: {module.hparams.task_name} restoration vs {BASELINE_TITLES.get(baseline, baseline)}",
    )
    summary = {f"{PREFIX}/test_{key}": float(value) for key, value in means.items()}
    logger.info(
        "Test (%d images): PSNR %.2f dB (%s %.2f dB), SSIM %.3f (%s %.3f)",
        len(rows),
        restored_means.get("psnr", float("nan")),
        baseline,
        baseline_means.get("psnr", float("nan")),
        restored_means.get("ssim", float("nan")),
        baseline,
        baseline_means.get("ssim", float("nan")),
    )
    return summary
