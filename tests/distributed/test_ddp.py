"""DDP on the CPU with 2 gloo processes: SimCLR's loss and gradients, the online linear head, the data split between
processes, a real 2-process run resumed from a 1-process checkpoint, and the learning-rate scaling rule.

SyncBatchNorm needs GPUs, so the SimCLR comparison runs the network in eval mode (BatchNorm from its running
statistics): what is compared is the contrastive loss with negatives gathered across processes and DDP's
gradient averaging, exactly; on GPUs SyncBatchNorm makes train-mode BatchNorm use the global batch as well.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from innerssl.batches import LINEAR_HEAD_BATCH_KEY
from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.containers.ssl import SSLContainer
from innerssl.data.datasets.base import LabelInfo
from innerssl.distributed import effective_learning_rate, global_rank_from_env, scaled_learning_rate
from innerssl.eval.online_linear import OnlineLinearHead
from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.ssl.simclr import SimCLR
from innerssl.training import hardware
from tests.conftest import REPO_ROOT, tiny_demo_flags

WORLD_SIZE = 2
GLOBAL_BATCH = 8
IMAGE_SIZE = 16
FEATURES = 8
HEAD_BATCH = 16
HEAD_STEPS = 3
HEAD_SEED = 7
LABELS = LabelInfo("binary", ("no", "yes"))
RUN_TIMEOUT_S = 240


# --- what every process computes -------------------------------------------------------------------------
def make_simclr() -> SimCLR:
    torch.manual_seed(0)
    model = SimCLR(encoder_name="resnet18", in_channels=1, projection_hidden_dim=32, projection_dim=16)
    return model.eval()  # BatchNorm from running statistics (SyncBatchNorm needs GPUs)


def global_views() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    shape = (GLOBAL_BATCH, 1, IMAGE_SIZE, IMAGE_SIZE)
    return torch.rand(shape, generator=generator), torch.rand(shape, generator=generator)


def shard(tensor: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    size = tensor.shape[0] // world_size
    return tensor[rank * size : (rank + 1) * size]


class SSLLoss(nn.Module):
    """The SSL loss as a module's forward, so that DDP can wrap it (an SSL module's step is not its forward)."""

    def __init__(self, method: SimCLR) -> None:
        super().__init__()
        self.method = method

    def forward(self, view0: torch.Tensor, view1: torch.Tensor) -> torch.Tensor:
        return self.method.ssl_loss(view0, view1)


def head_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(HEAD_STEPS, HEAD_BATCH, FEATURES, generator=generator)
    targets = (features[..., 0] + 0.5 * torch.randn(HEAD_STEPS, HEAD_BATCH, generator=generator) > 0).long()
    return features, targets


def fake_module(world_size: int) -> SimpleNamespace:
    """What the linear-head callback uses of the trainer and SSL module; the 'encoder' passes features through."""
    precision = SimpleNamespace(forward_context=contextlib.nullcontext)
    trainer = SimpleNamespace(world_size=world_size, precision_plugin=precision)
    return SimpleNamespace(
        feature_dim=FEATURES, device=torch.device("cpu"), hparams={}, trainer=trainer, embedding_encoder=nn.Identity
    )


def train_linear_head(rank: int, world_size: int) -> dict:
    features, targets = head_data()
    callback = OnlineLinearHead(LABELS, learning_rate=0.1, seed=HEAD_SEED)
    module = fake_module(world_size)
    initial = {k: v.clone() for k, v in callback._ensure_head(module).state_dict().items()}  # type: ignore[arg-type]
    for step in range(HEAD_STEPS):
        local = (shard(features[step], rank, world_size), shard(targets[step], rank, world_size))
        batch = {LINEAR_HEAD_BATCH_KEY: local}
        callback.on_train_batch_end(module.trainer, module, None, batch, step)  # type: ignore[arg-type]
    gather = None
    if world_size > 1:

        def gather(tensor: torch.Tensor) -> torch.Tensor:
            parts = [torch.empty_like(tensor) for _ in range(world_size)]
            dist.all_gather(parts, tensor)
            return torch.stack(parts)

    assert callback.head is not None
    return {
        "head_initial": initial,
        "head_final": {k: v.clone() for k, v in callback.head.state_dict().items()},
        "head_metrics": callback._predictions["train"].compute(gather),
    }


def worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model = make_simclr()
        ddp = DistributedDataParallel(SSLLoss(model))
        view0, view1 = global_views()
        loss = ddp(shard(view0, rank, world_size), shard(view1, rank, world_size))
        loss.backward()  # DDP averages the gradients over the processes
        results = {
            "loss": loss.detach(),
            "grads": {name: p.grad.clone() for name, p in model.named_parameters()},
        }
        # The global random streams differ between processes: the head's initial weights must not depend on them.
        torch.manual_seed(1000 + rank)
        results.update(train_linear_head(rank, world_size))
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(worker, args=(WORLD_SIZE, free_port(), str(out_dir)), nprocs=WORLD_SIZE, join=True)
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=False) for rank in range(WORLD_SIZE)]


# --- SimCLR --------------------------------------------------------------------------------------------------
def test_simclr_loss_and_gradient_under_ddp_equal_the_single_process_ones(ranks: list[dict]) -> None:
    model = make_simclr()
    view0, view1 = global_views()
    loss = model.ssl_loss(view0, view1)
    loss.backward()

    # Each process's loss covers its own positives against every process's negatives: their mean (what
    # sync_dist logs) is the loss of the whole batch.
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-5)
    # Without the gathered negatives each shard's loss would be lower (fewer negatives to confuse).
    with torch.no_grad():
        local_only = [model.ssl_loss(shard(view0, r, WORLD_SIZE), shard(view1, r, WORLD_SIZE)) for r in range(2)]
    assert torch.stack(local_only).mean().item() < loss.item() - 0.1

    # lightly's gather passes gradients back to the process that made each embedding (all-reduce of the
    # gathered gradients), and DDP averages over processes: together the gradient of the global loss.
    for name, parameter in model.named_parameters():
        expected = parameter.grad
        for rank in ranks:
            torch.testing.assert_close(rank["grads"][name], expected, rtol=1e-4, atol=1e-6, msg=name)
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name


# --- online linear head --------------------------------------------------------------------------------------
def test_online_linear_head_has_the_same_weights_on_every_process(ranks: list[dict]) -> None:
    torch.manual_seed(12345)
    single = train_linear_head(rank=0, world_size=1)
    for name in single["head_initial"]:
        # Same start although the processes' random streams differ, and the same as a single process.
        assert torch.equal(ranks[0]["head_initial"][name], ranks[1]["head_initial"][name]), name
        assert torch.equal(ranks[0]["head_initial"][name], single["head_initial"][name]), name
        # Averaged gradients, same steps: identical weights on every process after each step...
        assert torch.equal(ranks[0]["head_final"][name], ranks[1]["head_final"][name]), name
        assert not torch.equal(ranks[0]["head_final"][name], ranks[0]["head_initial"][name]), name
        # ...equal to training on the whole batch in one process.
        torch.testing.assert_close(ranks[0]["head_final"][name], single["head_final"][name], rtol=1e-5, atol=1e-6)
    # Metrics from the predictions gathered over the processes are those of the whole data.
    for rank in ranks:
        for metric, value in single["head_metrics"].items():
            assert rank["head_metrics"][metric] == pytest.approx(value, rel=1e-5), metric


# --- a real run: 1 process, then resumed on 2 --------------------------------------------------------------
def run_probe(tmp_path: Path, **flags: object) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        str(REPO_ROOT / "runner.py"),
        "--model=ProbeSimCLR",
        f"--config_module={Path(__file__).parent / 'probe_config.py'}",
        *tiny_demo_flags(tmp_path, **flags),
    ]
    # One thread per process: on a small shared CPU, intra-op threads of several processes only contend.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def resumed_on_two_processes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("resume")
    run_probe(tmp_path, num_epochs=1)
    run_probe(tmp_path, num_epochs=2, num_cpu_processes=2, resume="true")
    return tmp_path


def probe_records(tmp_path: Path, epoch: int) -> list[dict]:
    records = [json.loads((tmp_path / "outputs" / f"probe_rank{r}_epoch{epoch}.json").read_text()) for r in range(2)]
    assert [r["rank"] for r in records] == [0, 1] and all(r["world_size"] == WORLD_SIZE for r in records)
    return records


def test_each_sample_goes_to_one_process_per_epoch(resumed_on_two_processes: Path) -> None:
    records = probe_records(resumed_on_two_processes, epoch=1)
    # The SSL training loader and the validation loaders: each process gets its share of the whole data.
    samplers = {
        ("train", "ssl"): "ResumableSampler",
        ("val", 0): "DistributedSampler",
        ("val", 1): "DistributedSampler",
    }
    for (stage, key), sampler in samplers.items():
        described = [record[stage][key] for record in records]
        size = described[0]["dataset_size"]
        per_process = [d["indices"] for d in described]
        assert all(d["sampler"] == sampler and d["distributed"] for d in described), (stage, key)
        # Complete and, but for the padding DistributedSampler adds to make the shares equal, disjoint.
        assert len(per_process[0]) == len(per_process[1]) == math.ceil(size / WORLD_SIZE), (stage, key)
        assert set(per_process[0]) | set(per_process[1]) == set(range(size)), (stage, key)
        padding = WORLD_SIZE * math.ceil(size / WORLD_SIZE) - size
        assert len(set(per_process[0]) & set(per_process[1])) == padding, (stage, key)
    # The linear head's training loader gives one labeled batch per SSL batch, from disjoint shares.
    labeled = [record["train"]["linear_head"] for record in records]
    ssl = records[0]["train"]["ssl"]
    ssl_batches = len(ssl["indices"]) // ssl["batch_size"]
    assert all(d["sampler"] == "ResumableSampler" and d["distributed"] for d in labeled)
    assert [len(d["indices"]) for d in labeled] == [ssl_batches * labeled[0]["batch_size"]] * WORLD_SIZE
    assert not set(labeled[0]["indices"]) & set(labeled[1]["indices"])
    # What the training batches really held: each process read its own share, in its sampler's order, in
    # full batches (drop_last) -- and the shares did not overlap.
    for key in ("ssl", "linear_head"):
        seen = [record["seen"][key] for record in records]
        for record, read in zip(records, seen):
            loader = record["train"][key]
            assert loader["drop_last"]
            full = len(loader["indices"]) // loader["batch_size"] * loader["batch_size"]
            assert full > 0 and read[:full] == loader["indices"][:full], key
        if padding == 0:
            assert not set(seen[0]) & set(seen[1]), key


def test_resume_on_two_processes_from_a_one_process_checkpoint(resumed_on_two_processes: Path) -> None:
    model_dir = resumed_on_two_processes / "outputs" / "ProbeSimCLR"
    assert [p.name for p in model_dir.iterdir()] == ["test"]  # one run folder for both processes
    run = model_dir / "test"
    for name in ("config.yaml", "log.txt", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    assert metrics[["ssl/train_loss", "ssl/val_loss", "linear_head/val_auroc"]].notna().all().all()

    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    # The schedules follow the fraction of training done, not a step count: the resumed epoch (half as many
    # steps on 2 processes) trains with the second half of the cosine schedule and ends exactly at zero.
    steps_one_process = int(metrics["step"].iloc[0])
    assert 0 < metrics["step"].iloc[1] - steps_one_process < steps_one_process
    assert metrics["ssl/learning_rate"].iloc[1] > 0
    scheduler = checkpoint["lr_schedulers"][0]
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)
    # The learning rate follows the 2-process global batch (16 per process x 2 / 256 x 2e-3).
    expected = scaled_learning_rate(2e-3, 16, WORLD_SIZE, 256)
    assert checkpoint["hyper_parameters"]["learning_rate"] == pytest.approx(expected)
    assert scheduler["base_lrs"][0] == pytest.approx(expected)


# --- learning-rate scaling, hardware ---------------------------------------------------------------------------
def test_linear_scaling_rule() -> None:
    assert scaled_learning_rate(1e-3, 64, 1, 256) == 1e-3  # one process: unchanged, whatever the batch
    assert scaled_learning_rate(1e-3, 64, 4, 256) == pytest.approx(1e-3)
    assert scaled_learning_rate(1e-3, 75, 16, 256) == pytest.approx(1e-3 * 1200 / 256)  # InnerEye: 16 GPUs
    assert scaled_learning_rate(2e-3, 64, 2, 64) == pytest.approx(4e-3)


def test_effective_learning_rate_of_the_containers(monkeypatch: pytest.MonkeyPatch) -> None:
    container = SSLContainer(ssl_training_batch_size=64, learning_rate=1e-3, max_num_gpus=0)
    assert effective_learning_rate(container, 64) == 1e-3
    container.num_cpu_processes = 2
    container.num_nodes = 2
    assert effective_learning_rate(container, 64) == pytest.approx(1e-3 * 64 * 4 / 256)
    assert container.method_arguments()["learning_rate"] == pytest.approx(1e-3)
    container.learning_rate_reference_batch_size = 128
    assert container.method_arguments()["learning_rate"] == pytest.approx(2e-3)
    container.scale_learning_rate_with_batch_size = False
    assert container.method_arguments()["learning_rate"] == 1e-3

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    gpus = SSLContainer(ssl_training_batch_size=75, learning_rate=1e-3, num_nodes=2)
    assert effective_learning_rate(gpus, 75) == pytest.approx(1e-3 * 1200 / 256)

    classifier = SSLClassifierContainer(
        linear_head_dataset_name="Demo",
        ssl_encoder="resnet18",
        linear_head_batch_size=32,
        learning_rate=1e-2,
        max_num_gpus=2,
    )
    datamodule = SimpleNamespace(splits=SimpleNamespace(label_info=LABELS))
    module = classifier.create_lightning_module(datamodule)  # type: ignore[arg-type]
    assert module.hparams.learning_rate == pytest.approx(1e-2 * 64 / 256)


def test_hardware_maps_gpus_nodes_and_cpu_processes_to_lightning(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = SSLContainer(max_num_gpus=0)
    assert hardware(cpu) == {"accelerator": "cpu", "devices": 1, "num_nodes": 1, "strategy": "auto"}
    cpu.num_cpu_processes = 2
    assert hardware(cpu) == {"accelerator": "cpu", "devices": 2, "num_nodes": 1, "strategy": "ddp"}

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert hardware(SSLContainer(max_num_gpus=1)) == {
        "accelerator": "gpu",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "sync_batchnorm": False,
    }
    assert hardware(SSLContainer(max_num_gpus=-1, num_nodes=2)) == {
        "accelerator": "gpu",
        "devices": 4,
        "num_nodes": 2,
        "strategy": "ddp",
        "sync_batchnorm": True,
    }
    frozen = SSLClassifierContainer(max_num_gpus=2, freeze_encoder=True)
    assert hardware(frozen)["strategy"] == "ddp" and not hardware(frozen)["sync_batchnorm"]
    # One GPU through the multi-GPU code path (benchmarks/gpu_check.py's ddp.one_gpu).
    assert hardware(SSLContainer(max_num_gpus=1, force_ddp=True)) == {
        "accelerator": "gpu",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "ddp",
        "sync_batchnorm": True,
    }


def test_global_rank_from_the_launchers_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    assert global_rank_from_env(4) == 0
    monkeypatch.setenv("SLURM_PROCID", "5")  # srun
    assert global_rank_from_env(4) == 5
    monkeypatch.setenv("NODE_RANK", "1")  # python runner.py on the second node: Lightning launches the others
    assert global_rank_from_env(4) == 4
    monkeypatch.setenv("LOCAL_RANK", "1")  # one Lightning launched, here in an interactive SLURM shell
    assert global_rank_from_env(4) == 5
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert global_rank_from_env(4) == 5
    monkeypatch.setenv("RANK", "7")  # torchrun, Azure ML
    assert global_rank_from_env(4) == 7
