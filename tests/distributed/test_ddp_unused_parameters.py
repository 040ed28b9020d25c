"""MONAI's ViT blocks hold parameters their forward never uses (``norm_cross_attn``): DDP must then search for
unused parameters, or the second step fails waiting for their gradients. Detected by type, switched on only for
such networks, and a real two-process (gloo) ViTAutoEnc run trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from monai.networks.nets import BasicUNet, ViTAutoEnc

from configs.volumes import Hippocampus_ViTAutoEnc
from innerssl.distributed import parameters_without_gradients
from innerssl.training import hardware
from tests.test_restoration_runs import run_flags, samples

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY_VIT = ["token_size=16", "hidden_size=48", "mlp_dim=96", "num_layers=1", "num_heads=4"]


def tiny_vit() -> ViTAutoEnc:
    return ViTAutoEnc(
        in_channels=1, img_size=32, patch_size=16, hidden_size=48, mlp_dim=96, num_layers=2, num_heads=4, spatial_dims=3
    )


def test_unused_vit_parameters_are_found_by_type() -> None:
    network = tiny_vit()
    unused = parameters_without_gradients(network)
    assert unused and all(".norm_cross_attn." in name or ".cross_attn." in name for name in unused)
    assert {name.split(".")[1] for name in unused} == {"0", "1"}  # every block
    # They really get no gradient, and every other parameter does.
    reconstruction, _ = network(torch.rand(1, 1, 32, 32, 32))
    reconstruction.sum().backward()
    without = {name for name, parameter in network.named_parameters() if parameter.grad is None}
    assert without == set(unused)
    assert parameters_without_gradients(BasicUNet(spatial_dims=3, in_channels=1, out_channels=1)) == []


def test_ddp_searches_unused_parameters_only_for_such_networks() -> None:
    container = Hippocampus_ViTAutoEnc(max_num_gpus=0, num_cpu_processes=2)
    assert hardware(container, tiny_vit())["strategy"] == "ddp_find_unused_parameters_true"
    assert hardware(container, BasicUNet(spatial_dims=3, in_channels=1, out_channels=1))["strategy"] == "ddp"
    assert hardware(Hippocampus_ViTAutoEnc(max_num_gpus=0), tiny_vit())["strategy"] == "auto"


def test_vit_autoenc_trains_on_two_processes(tmp_path: Path) -> None:
    dataset = samples() / "hippocampus-sample"
    flags = run_flags(
        tmp_path,
        dataset,
        f"--network_options={','.join(TINY_VIT)}",
        "--num_epochs=1",
        "--num_cpu_processes=2",
        "--patches_per_image=1",
        "--batch_size=2",
        "--test_fraction=0.05",
        "--val_fraction=0.05",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO_ROOT / "runner.py"), "--model=Hippocampus_ViTAutoEnc", *flags]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = tmp_path / "outputs" / "Hippocampus_ViTAutoEnc" / "run"
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["restoration/train_loss"].notna().any()
    assert "DDP finds unused parameters" in (folder / "log.txt").read_text()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
