"""Restoration pretext tasks end to end through the runner, on the real shared samples in the layouts users have:
BiaPy's nuclei-2d / nuclei-3d (16-bit TIFF), the NIH PNGs (a flat folder, RGBA files among gray ones) and the
Decathlon hippocampus volumes (NIfTI). Each run writes BiaPy's outputs into the run folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from PIL import Image

from innerssl.outputs.checkpoints import CHECKPOINT_KEY, load_checkpoint
from innerssl.runner import main
from tests.conftest import SHARED_DATA

UNET_2D = "--network_options=channels=8x16x32,strides=2x2"
UNET_3D = "--network_options=channels=8x16,strides=2"
MAE_2D = (
    "--network_options=token_size=16,hidden_size=48,mlp_dim=96,num_layers=1,num_heads=4,"
    "decoder_hidden_size=48,decoder_mlp_dim=96,decoder_num_layers=1,decoder_num_heads=4"
)
MAE_3D = MAE_2D  # 3D sin-cos embeddings need widths divisible by 6: 48 is


def samples() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)")
    return SHARED_DATA


def run_flags(tmp_path: Path, dataset: Path, *extra: str, run_name: str = "run") -> list[str]:
    """Tiny-run flags; ``extra`` flags replace the defaults of the same name."""
    defaults = [
        f"--local_dataset={dataset}",
        f"--output_dir={tmp_path / 'outputs'}",
        f"--dataset_cache_dir={tmp_path / 'cache'}",
        f"--run_name={run_name}",
        "--max_num_gpus=0",
        "--num_workers=0",
        "--num_epochs=2",
        "--patches_per_image=2",
        "--batch_size=2",
    ]
    flags = {flag.partition("=")[0]: flag for flag in [*defaults, *extra]}
    return list(flags.values())


def run(model: str, flags: list[str], tmp_path: Path, run_name: str = "run") -> Path:
    assert main([f"--model={model}", *flags]) == 0
    return tmp_path / "outputs" / model / run_name


def check_restoration_outputs(folder: Path, baseline: str, test_names: list[str], suffix: str) -> pd.DataFrame:
    metrics = pd.read_csv(folder / "metrics.csv")
    for metric in ("psnr", "ssim", "mae", "mse"):
        assert f"restoration/val_{metric}" in metrics and f"restoration/val_{baseline}_{metric}" in metrics
    assert (folder / "charts" / "restoration_psnr.png").is_file()
    assert (folder / "aug" / "restoration_inputs.png").is_file()
    table = pd.read_csv(folder / "test_metrics.csv")
    assert sorted(table["name"]) == sorted(test_names)
    assert {"psnr", "ssim", "mae", "mse", f"{baseline}_psnr"} <= set(table.columns)
    assert (folder / "test_metrics.png").is_file() and (folder / "test_metrics_mean.csv").is_file()
    for name in test_names:
        assert (folder / "per_image" / f"{name}{suffix}").is_file()
    info = load_checkpoint(folder / "checkpoints" / "last.ckpt")[CHECKPOINT_KEY]
    assert info["kind"] == "restoration" and info["network_spec"]["name"]
    return table


def test_crappify_2d_on_biapy_tiffs_writes_biapy_outputs(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    folder = run("TIF2D_Crappify", run_flags(tmp_path, dataset, "--patch_size=64", UNET_2D), tmp_path)
    table = check_restoration_outputs(folder, "input", ["nuclei-3"], ".tif")
    splits = pd.read_csv(folder / "splits.csv")
    assert splits.groupby("split").size().to_dict() == {"test": 1, "train": 2, "val": 1}
    assert set(splits.name) == {"nuclei-0", "nuclei-1", "nuclei-2", "nuclei-3"}
    restored = tifffile.imread(folder / "per_image" / "nuclei-3.tif")
    assert restored.shape == tifffile.imread(dataset / "test" / "x" / "nuclei-3.tif").shape
    assert restored.dtype == np.float32
    # The residual restoration starts at the degraded input: after two tiny epochs it is close to it, not noise.
    assert table["psnr"].iloc[0] > table["input_psnr"].iloc[0] - 3


def test_crappify_copies_on_disk_are_written_once_and_reused(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    flags = ["--patch_size=64", UNET_2D, "--crappify_source=on_disk", "--num_epochs=1"]
    run("TIF2D_Crappify", run_flags(tmp_path, dataset, *flags, run_name="first"), tmp_path, "first")
    copies = sorted((tmp_path / "cache" / "nuclei-2d_ssl_source").rglob("*.npy"))
    assert len(copies) == 4  # 2 train + 1 carved val + 1 test
    written = {path: path.stat().st_mtime_ns for path in copies}
    folder = run("TIF2D_Crappify", run_flags(tmp_path, dataset, *flags, run_name="second"), tmp_path, "second")
    assert {path: path.stat().st_mtime_ns for path in copies} == written
    check_restoration_outputs(folder, "input", ["nuclei-3"], ".tif")


def test_masking_2d_writes_mae_checks_with_biapy_names(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    flags = ["--patch_size=64", MAE_2D, "--checks_every_n_epochs=1", "--mae_mask_type=grid"]
    folder = run("TIF2D_MAE", run_flags(tmp_path, dataset, *flags), tmp_path)
    check_restoration_outputs(folder, "mean_fill", ["nuclei-3"], ".tif")
    for epoch in ("epoch_000", "epoch_001"):
        files = sorted(path.name for path in (folder / "mae_checks" / epoch).iterdir())
        assert len(files) == 4 and all(path.endswith(".tif") for path in files)
        assert {name.split("_", 1)[1] for name in files} == {
            "original.tif",
            "masked.tif",
            "reconstruction.tif",
            "reconstruction_and_visible.tif",
        }
    original = tifffile.imread(folder / "mae_checks" / "test" / "nuclei-3_original.tif")
    visible = tifffile.imread(folder / "mae_checks" / "test" / "nuclei-3_reconstruction_and_visible.tif")
    assert original.shape == visible.shape == (256, 256)
    # The grid keeps every other 16 px token: there the reconstruction-and-visible image is the original.
    assert np.array_equal(original[:16, :16], visible[:16, :16])
    assert not np.array_equal(original[:16, 16:32], visible[:16, 16:32])


def test_crappify_and_masking_3d_on_a_tiff_stack(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-3d"
    stack = tifffile.imread(dataset / "test" / "x" / "nuclei-stack.tif")
    # One training stack: no validation carve; the last checkpoint is tested.
    flags = ["--spatial_dims=3", "--patch_size=16", UNET_3D, "--val_fraction=0", "--num_epochs=1"]
    folder = run("TIF3D_Crappify", run_flags(tmp_path, dataset, *flags), tmp_path)
    restored = tifffile.imread(folder / "per_image" / "nuclei-stack.tif")
    assert restored.shape == stack.shape
    assert {"psnr", "input_psnr"} <= set(pd.read_csv(folder / "test_metrics.csv").columns)
    flags = ["--spatial_dims=3", "--patch_size=32", MAE_3D, "--val_fraction=0", "--num_epochs=1"]
    folder = run("TIF3D_MAE", run_flags(tmp_path, dataset, *flags), tmp_path)
    assert tifffile.imread(folder / "per_image" / "nuclei-stack.tif").shape == stack.shape
    assert (folder / "mae_checks" / "test" / "nuclei-stack_reconstruction.tif").is_file()


def test_crappify_3d_on_decathlon_nifti_keeps_the_affine(tmp_path):
    source = samples() / "hippocampus-sample"
    dataset = tmp_path / "hippocampus"
    for folder in ("imagesTr", "labelsTr"):
        (dataset / folder).mkdir(parents=True)
        for path in sorted((source / folder).glob("*.nii.gz"))[:6]:
            shutil.copy(path, dataset / folder / path.name)
    flags = ["--patch_size=16", UNET_3D, "--test_fraction=0.2", "--val_fraction=0.2", "--num_epochs=1"]
    folder = run("Hippocampus_Crappify", run_flags(tmp_path, dataset, *flags), tmp_path)
    table = pd.read_csv(folder / "test_metrics.csv")
    assert len(table) == 1
    name = table["name"].iloc[0]
    written = nib.load(folder / "per_image" / f"{name}.nii.gz")
    original = nib.load(dataset / "imagesTr" / f"{name}.nii.gz")
    assert written.shape[:3] == original.shape[:3]
    assert np.allclose(written.affine, original.affine)


def test_crappify_on_nih_pngs_converts_the_rgba_files_to_gray(tmp_path, capsys):
    source = samples() / "nih-sample" / "images"
    dataset = tmp_path / "nih"
    (dataset / "images").mkdir(parents=True)
    names = ["00000773_001.png", "00001054_002.png"]  # RGBA copies of gray radiographs
    names += sorted(path.name for path in source.glob("*.png"))[:8]
    for name in dict.fromkeys(names):
        shutil.copy(source / name, dataset / "images" / name)
    flags = ["--patch_size=64", UNET_2D, "--num_epochs=1"]
    folder = run("NIH_Crappify", run_flags(tmp_path, dataset, *flags), tmp_path)
    table = pd.read_csv(folder / "test_metrics.csv")
    assert len(table) >= 1
    assert np.asarray(Image.open(folder / "per_image" / f"{table['name'][0]}.png")).shape == (1024, 1024)
    # Without --in_channels the mixed channel counts are refused, naming the odd file.
    mixed = run_flags(tmp_path, dataset, *flags, "--in_channels=none", run_name="mixed")
    assert main(["--model=NIH_Crappify", *mixed]) != 0
    error = capsys.readouterr().err
    assert "00000773_001.png" in error or "00001054_002.png" in error
    assert "--in_channels=1" in error


def test_restoration_checkpoint_records_the_task(tmp_path):
    dataset = samples() / "microscopy-sample" / "nuclei-2d"
    flags = ["--patch_size=64", UNET_2D, "--num_epochs=1", "--crappify_noise=0.1", "--crappify_resizing_factor=2"]
    folder = run("TIF2D_Crappify", run_flags(tmp_path, dataset, *flags), tmp_path)
    checkpoint = load_checkpoint(folder / "checkpoints" / "last.ckpt")
    info = checkpoint[CHECKPOINT_KEY]
    assert info["method"] == "crappify"
    assert info["task_arguments"]["noise"] == 0.1 and info["task_arguments"]["resizing_factor"] == 2
    assert any(key.startswith("network.") for key in checkpoint["state_dict"])
    assert all(isinstance(value, torch.Tensor) for value in checkpoint["state_dict"].values())
