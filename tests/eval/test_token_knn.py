"""The kNN monitor of a restoration ViT's pooled tokens (2D or 3D): the labels CSV, the pooled embedding over
tiles, and a ViTAutoEnc pretraining run that logs knn/val_* for volumes whose classes differ."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pandas as pd
import pytest
import torch
from monai.networks.nets import ViTAutoEnc

from innerssl.errors import UserError
from innerssl.eval.token_knn import pooled_token_embedding, read_image_labels, vit_tokens
from innerssl.runner import main


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_labels_csv_and_its_errors(tmp_path: Path) -> None:
    labels = read_image_labels(write_csv(tmp_path / "a.csv", "image,label\nv1,tumour\nv2,normal\nv3,normal\n"))
    assert labels.label_info.task == "binary" and labels.label_info.class_names == ("normal", "tumour")
    assert labels.by_name == {"v1": 1, "v2": 0, "v3": 0}
    three = read_image_labels(write_csv(tmp_path / "b.csv", "image,label\na,x\nb,y\nc,z\n"))
    assert three.label_info.task == "multiclass" and three.by_name["c"] == 2
    with pytest.raises(UserError, match="no column label"):
        read_image_labels(write_csv(tmp_path / "c.csv", "image,class\na,x\n"))
    with pytest.raises(UserError, match="lists a more than once"):
        read_image_labels(write_csv(tmp_path / "d.csv", "image,label\na,x\na,y\n"))
    with pytest.raises(UserError, match="at least two"):
        read_image_labels(write_csv(tmp_path / "e.csv", "image,label\na,x\nb,x\n"))
    with pytest.raises(UserError, match="is not a file"):
        read_image_labels(tmp_path / "missing.csv")


def test_pooled_embedding_is_the_mean_token_over_tiles() -> None:
    torch.manual_seed(0)
    network = ViTAutoEnc(
        in_channels=1, img_size=16, patch_size=4, hidden_size=24, mlp_dim=48, num_layers=1, num_heads=2, spatial_dims=3
    ).eval()
    volume = torch.rand(1, 32, 16, 20)  # 2 x 1 x 2 tiles, the last along x shifted back to 4..19
    embedding = pooled_token_embedding(network, volume, (16, 16, 16))
    tiles = torch.stack([volume[:, z : z + 16, :, x : x + 16] for z in (0, 16) for x in (0, 4)])
    with torch.no_grad():
        expected = vit_tokens(network, tiles).mean(dim=(0, 1))
    assert embedding.shape == (24,) and torch.allclose(embedding, expected, atol=1e-6)
    small = pooled_token_embedding(network, torch.rand(1, 10, 16, 16), (16, 16, 16))  # reflection-padded
    assert small.shape == (24,) and torch.isfinite(small).all()


def write_two_class_volumes(root: Path, count: int = 16) -> Path:
    """``count`` 32^3 uint8 volumes: even ones dark (about 40), odd ones bright (about 200); labels.csv."""
    folder = root / "volumes"
    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    rows = []
    for index in range(count):
        level = 200 if index % 2 else 40
        voxels = np.clip(generator.normal(level, 10, (32, 32, 32)), 0, 255).astype(np.uint8)
        nibabel.save(nibabel.Nifti1Image(voxels, np.eye(4)), folder / f"case_{index:02d}.nii.gz")
        rows.append({"image": f"case_{index:02d}", "label": "bright" if index % 2 else "dark"})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return folder


def test_a_vit_autoenc_run_logs_the_knn_metrics(tmp_path: Path) -> None:
    dataset = write_two_class_volumes(tmp_path)
    flags = [
        "--model=Hippocampus_ViTAutoEnc",
        f"--local_dataset={dataset}",
        f"--output_dir={tmp_path / 'outputs'}",
        "--run_name=run",
        "--max_num_gpus=0",
        "--num_epochs=1",
        "--patches_per_image=1",
        "--batch_size=4",
        "--normalisation=div",
        "--val_fraction=0.3",
        "--test_fraction=0.1",
        "--network_options=token_size=16,hidden_size=48,mlp_dim=96,num_layers=1,num_heads=4",
        f"--monitor_labels={tmp_path / 'labels.csv'}",
    ]
    assert main(flags) == 0
    metrics = pd.read_csv(tmp_path / "outputs" / "Hippocampus_ViTAutoEnc" / "run" / "metrics.csv")
    accuracy = metrics["knn/val_accuracy"].dropna()
    assert len(accuracy) == 1 and accuracy.iloc[0] == 1.0  # the classes differ in brightness: any encoder sees it
    assert metrics["knn/val_auroc"].dropna().iloc[0] == 1.0


def test_the_monitor_needs_a_vit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dataset = write_two_class_volumes(tmp_path, count=4)
    flags = [
        "--model=Hippocampus_Crappify",
        f"--local_dataset={dataset}",
        f"--monitor_labels={tmp_path / 'labels.csv'}",
        "--max_num_gpus=0",
    ]
    assert main(flags) != 0
    assert "--monitor_labels monitors a ViT's tokens but the network is unet" in capsys.readouterr().err
