"""The online linear head: it reads what a converged linear probe reads, leaves the encoder alone, and resumes.

Most tests drive the callback through a real Lightning loop around a module whose "encoder" passes synthetic
embeddings through unchanged (``EmbeddingPassThrough``), so what is measured is the head alone, in seconds.
"""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from innerssl.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.embeddings import Embedded
from innerssl.eval.linear_probe import fit_linear_probe, ranking_auroc
from innerssl.eval.online_linear import (
    PROBE_L2_METRIC,
    OnlineLinearHead,
    ProbeImages,
    RunningStandardisation,
    StandardisedLinear,
)
from innerssl.ssl.simclr import SimCLR

BINARY = LabelInfo("binary", ("no", "yes"))
MULTILABEL = LabelInfo("multilabel", ("a", "b", "c"))
FEATURES = 24
BATCH = 64
TRAIN_BATCHES = 20  # the demo's: 1,280 labeled images in batches of 64, one pass per epoch


# --- synthetic embeddings ---------------------------------------------------------------------------------
def pooled_like_embeddings(
    count: int, generator: torch.Generator, labels: torch.Tensor | None = None, signal: float = 1.2
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings shaped like a CNN's pooled features: per-dimension offsets and scales that differ by orders of
    magnitude, the label visible along a few low-variance directions, mixed into the others, with label noise."""
    if labels is None:
        labels = (torch.rand(count, generator=generator) < 0.5).long()
    latent = torch.randn(count, FEATURES, generator=generator)
    latent[:, :3] += signal * (2 * labels.float()[:, None] - 1)  # the signal: 3 of 24 dimensions
    mixing = torch.eye(FEATURES) + 0.3 * torch.randn(FEATURES, FEATURES, generator=torch.Generator().manual_seed(7))
    scales = torch.logspace(-2, 1, FEATURES)[torch.randperm(FEATURES, generator=torch.Generator().manual_seed(8))]
    offsets = 5 + 3 * torch.rand(FEATURES, generator=torch.Generator().manual_seed(9))
    return offsets + (latent @ mixing) * scales, labels


def embedding_splits(seed: int = 0) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "train": pooled_like_embeddings(TRAIN_BATCHES * BATCH, generator),
        "val": pooled_like_embeddings(400, generator),
    }


class EmbeddingPassThrough(pl.LightningModule):
    """An 'SSL module' whose inputs are already embeddings: its encoder is the identity, its step trains nothing."""

    def __init__(self, feature_dim: int = FEATURES) -> None:
        super().__init__()
        self.feature_dim = feature_dim
        self.encoder = nn.Identity()
        self.unused = nn.Linear(1, 1)  # an optimizer needs a parameter

    def embedding_encoder(self) -> nn.Module:
        return self.encoder

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.unused.weight.sum() * 0.0

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        return None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


class EmbeddingLoaders(pl.LightningDataModule):
    """One labeled batch per SSL batch (as the SSL data module); validation loader 1 is the labeled one."""

    def __init__(self, splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
        super().__init__()
        self.splits = splits

    def train_dataloader(self) -> Any:
        features, labels = self.splits["train"]
        ssl = DataLoader(TensorDataset(torch.zeros(len(labels), 1)), batch_size=BATCH)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: self.labeled(features, labels)}

    @staticmethod
    def labeled(features: torch.Tensor, labels: torch.Tensor) -> DataLoader:
        return DataLoader(TensorDataset(features, labels), batch_size=BATCH)  # in order: the data are random already

    def val_dataloader(self) -> Any:
        features, labels = self.splits["val"]
        return [DataLoader(TensorDataset(torch.zeros(8, 1)), batch_size=8), self.labeled(features, labels)]


def probe_images(splits: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> ProbeImages:
    return ProbeImages(TensorDataset(*splits["train"]), device_transform=None, batch_size=256)


def fit(callback: OnlineLinearHead, splits: dict, epochs: int = 1, **trainer_options: Any) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_options,
    )
    trainer.fit(EmbeddingPassThrough(), datamodule=EmbeddingLoaders(splits))
    return trainer


def converged_probe_auroc(splits: dict, label_info: LabelInfo = BINARY) -> float:
    train, val = (Embedded(features, labels.float()) for features, labels in (splits["train"], splits["val"]))
    return fit_linear_probe(train, val, label_info).chosen.val_auroc


def head_auroc(head: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return ranking_auroc(head(features).double(), labels, BINARY)


# --- fidelity -----------------------------------------------------------------------------------------------
def test_fit_at_validation_reads_what_the_converged_probe_reads() -> None:
    splits = embedding_splits()
    probe = converged_probe_auroc(splits)
    streamed = float(fit(OnlineLinearHead(BINARY), splits).callback_metrics["linear_head/val_auroc"])
    trainer = fit(OnlineLinearHead(BINARY, probe_images=probe_images(splits)), splits)
    fitted = float(trainer.callback_metrics["linear_head/val_auroc"])
    # The converged fit at validation is the probe: same embeddings, same fit, same choice of L2...
    assert fitted == pytest.approx(probe, abs=1e-4), (fitted, probe)
    assert float(trainer.callback_metrics[PROBE_L2_METRIC]) > 0
    # ...which the streaming steps alone do not quite reach (so the equality above is the fit's doing).
    assert streamed < probe - 0.005, (streamed, probe)


def test_streaming_head_gets_near_the_converged_probe_within_one_epoch() -> None:
    splits = embedding_splits(seed=3)
    probe = converged_probe_auroc(splits)
    callback = OnlineLinearHead(BINARY)  # defaults: standardised features, several steps per labeled batch
    fit(callback, splits, epochs=1)
    assert callback.head is not None
    assert head_auroc(callback.head, *splits["val"]) >= probe - 0.03
    # The earlier head (a linear layer on raw embeddings, one AdamW step of 1e-2 per batch) does not get there,
    # on average over its random initialisations (seeded: the test must not depend on the global random stream).
    earlier_aurocs = []
    for seed in range(8):
        torch.manual_seed(seed)
        earlier = nn.Linear(FEATURES, 1)
        optimizer = torch.optim.AdamW(earlier.parameters(), lr=1e-2, weight_decay=0.0)
        for features, labels in EmbeddingLoaders.labeled(*splits["train"]):
            loss = nn.functional.binary_cross_entropy_with_logits(earlier(features).squeeze(1), labels.float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        earlier_aurocs.append(head_auroc(earlier, *splits["val"]))
    assert sum(earlier_aurocs) / len(earlier_aurocs) < probe - 0.04


def test_logs_train_and_val_metrics_every_epoch() -> None:
    splits = embedding_splits()
    callback = OnlineLinearHead(BINARY, probe_images=probe_images(splits))
    trainer = fit(callback, splits, epochs=2)
    for split in ("train", "val"):
        for metric in ("accuracy", "auroc", "auprc"):
            assert 0.0 <= float(trainer.callback_metrics[f"linear_head/{split}_{metric}"]) <= 1.0
        assert float(trainer.callback_metrics[f"linear_head/{split}_loss"]) > 0
    # The training metrics are the head's predictions before its steps on each batch: not flattered by them.
    assert float(trainer.callback_metrics["linear_head/train_auroc"]) < 1.0


# --- standardisation ------------------------------------------------------------------------------------------
def test_running_statistics_are_exact_for_large_offsets_and_follow_drift() -> None:
    generator = torch.Generator().manual_seed(0)
    standardisation = RunningStandardisation(4)
    first = 1000 + 0.01 * torch.randn(BATCH, 4, generator=generator)
    standardisation.update(first, momentum=0.1)
    # The first batch sets the statistics exactly, although its offset is 1e5 times its spread (float32).
    torch.testing.assert_close(standardisation.mean, first.mean(dim=0))
    torch.testing.assert_close(standardisation.var, first.var(dim=0, unbiased=False), rtol=1e-3, atol=0)
    # The first 1/momentum batches are averaged equally...
    for _ in range(9):
        standardisation.update(1000 + 0.01 * torch.randn(BATCH, 4, generator=generator), momentum=0.1)
    assert standardisation.mean.sub(1000).abs().max() < 0.01 / math.sqrt(10 * BATCH) * 4
    # ...then the average moves with the features: after 40 batches of a drifted encoder the estimates are its.
    for _ in range(40):
        standardisation.update(1003 + 0.05 * torch.randn(BATCH, 4, generator=generator), momentum=0.1)
    assert standardisation.mean.sub(1003).abs().max() < 0.05
    assert standardisation.scale().sub(0.05).abs().max() < 0.01


def test_constant_features_are_centred_not_divided_by_zero() -> None:
    head = StandardisedLinear(3, 1)
    features = torch.tensor([[1.0, 2.0, 0.0], [1.0, 4.0, 0.0]])
    head.standardisation.update(features, momentum=0.1)
    standardised = head.standardisation(features)
    assert torch.isfinite(standardised).all()
    torch.testing.assert_close(standardised[:, [0, 2]], torch.zeros(2, 2))


# --- the encoder is left alone ----------------------------------------------------------------------------------
def test_linear_head_batches_do_not_touch_the_encoder() -> None:
    torch.manual_seed(0)
    module = SimCLR(projection_hidden_dim=16, projection_dim=8)
    callback = OnlineLinearHead(BINARY, learning_rate=1e-2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_epochs=1)
    trainer.strategy.connect(module)
    module.trainer = trainer
    module.train()
    before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    images = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {LINEAR_HEAD_BATCH_KEY: (images, torch.arange(8) % 2)}
    for _ in range(3):
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    after = module.encoder.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"encoder {name} changed"
    assert module.encoder.training, "the encoder's training mode must be restored"
    assert all(p.grad is None for p in module.encoder.parameters())
    assert callback.head is not None and int(callback.head.standardisation.batches_seen) == 3


# --- checkpoints ---------------------------------------------------------------------------------------------------
class SaveMidEpoch(pl.Callback):
    """Writes a checkpoint after a few batches of the second epoch (after the first epoch's converged fit), as
    ``--checkpoint_every_n_minutes`` does, and the head's logits of ``features`` at that moment. Listed after the
    head, so the head's steps on that batch are in it."""

    def __init__(self, path: Path, head: OnlineLinearHead, features: torch.Tensor) -> None:
        self.path, self.head, self.features = path, head, features
        self.logits: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.current_epoch == 1 and batch_idx + 1 == MID_EPOCH_BATCHES:
            trainer.save_checkpoint(self.path)
            assert self.head.head is not None
            with torch.no_grad():
                self.logits = self.head.head(self.features)


MID_EPOCH_BATCHES = 5
BATCHES_PER_EPOCH = 6


def short_trainer(callbacks: list[pl.Callback]) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_train_batches=BATCHES_PER_EPOCH,
    )


def test_mid_epoch_checkpoint_restores_head_statistics_and_optimizer(tmp_path: Path) -> None:
    splits = embedding_splits()
    callback = OnlineLinearHead(BINARY, probe_images=probe_images(splits))
    path = tmp_path / "mid_epoch.ckpt"
    saver = SaveMidEpoch(path, callback, splits["val"][0])
    short_trainer([callback, saver]).fit(EmbeddingPassThrough(), datamodule=EmbeddingLoaders(splits))
    saved = torch.load(path, weights_only=True)["callbacks"][OnlineLinearHead.__qualname__]
    assert set(saved) == {"head", "optimizer"}
    assert {"standardisation.mean", "standardisation.var", "linear.weight"} <= set(saved["head"])
    assert not torch.equal(saved["head"]["standardisation.var"], torch.ones(FEATURES))
    assert int(saved["head"]["standardisation.batches_seen"]) == BATCHES_PER_EPOCH + MID_EPOCH_BATCHES
    # Moments of the steps since the fit reset them: the second epoch's batches so far, steps_per_batch each.
    assert saved["optimizer"]["state"][0]["step"] == MID_EPOCH_BATCHES * callback.steps_per_batch

    restored = OnlineLinearHead(BINARY, probe_images=probe_images(splits))
    restored.load_state_dict(saved)
    head = restored._ensure_head(EmbeddingPassThrough())
    for name, tensor in saved["head"].items():
        assert torch.equal(head.state_dict()[name], tensor), name
    assert restored.optimizer is not None
    assert restored.optimizer.state_dict()["state"][0]["step"] == saved["optimizer"]["state"][0]["step"]
    # The restored head (and the one the benchmark rebuilds from a checkpoint) predicts what the saved one did.
    features = splits["val"][0]
    with torch.no_grad():
        torch.testing.assert_close(head(features), saver.logits)
        torch.testing.assert_close(StandardisedLinear.from_state_dict(saved["head"])(features), saver.logits)

    # Lightning's resume hands the state to a fresh callback, which continues from it: one more batch of the epoch.
    resumed = OnlineLinearHead(BINARY, probe_images=probe_images(splits))
    trainer = short_trainer([resumed])
    trainer.fit(EmbeddingPassThrough(), datamodule=EmbeddingLoaders(splits), ckpt_path=path)
    assert resumed.head is not None
    assert int(resumed.head.standardisation.batches_seen) == 2 * BATCHES_PER_EPOCH


def test_a_checkpoint_of_the_unstandardised_head_starts_the_head_afresh() -> None:
    old_state = {"head": {"weight": torch.ones(1, FEATURES), "bias": torch.zeros(1)}, "optimizer": {}}
    callback = OnlineLinearHead(BINARY)
    callback.load_state_dict(old_state)
    head = callback._ensure_head(EmbeddingPassThrough())
    assert int(head.standardisation.batches_seen) == 0
    assert not torch.equal(head.linear.weight, old_state["head"]["weight"])


def test_fit_folds_into_the_head_exactly() -> None:
    head = StandardisedLinear(FEATURES, 1)
    features, _ = pooled_like_embeddings(50, torch.Generator().manual_seed(0))
    head.standardisation.set_statistics(features.mean(dim=0), features.var(dim=0, unbiased=False))
    weight, bias = torch.randn(1, FEATURES), torch.randn(1)
    head.set_raw_linear_model(weight, bias)
    torch.testing.assert_close(head(features), features @ weight.T + bias, rtol=1e-4, atol=1e-3)


# --- tasks and losses ---------------------------------------------------------------------------------------------
def test_multilabel_with_unknown_labels_trains_and_fits() -> None:
    generator = torch.Generator().manual_seed(0)
    splits = {}
    for name, count in (("train", TRAIN_BATCHES * BATCH), ("val", 200)):
        labels = (torch.rand(count, 3, generator=generator) < 0.5).float()
        features, _ = pooled_like_embeddings(count, generator, labels[:, 0].long())
        labels[torch.rand(count, 3, generator=generator) < 0.3] = math.nan
        labels[:BATCH] = math.nan  # a whole batch without any known label
        splits[name] = (features, labels)
    callback = OnlineLinearHead(MULTILABEL, probe_images=probe_images(splits))
    trainer = fit(callback, splits)
    assert callback.head is not None
    assert all(torch.isfinite(tensor).all() for tensor in callback.head.state_dict().values())
    # Label a is visible in the features, b and c are not: the macro AUROC is above chance, not near 1.
    assert 0.6 < float(trainer.callback_metrics["linear_head/val_auroc"]) < 0.95


def test_balanced_loss_reaches_the_fit() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = (torch.rand(TRAIN_BATCHES * BATCH, generator=generator) < 0.15).long()
    splits = {
        # A weak signal (AUROC ~0.75): the classes overlap, so the loss's weighting moves the predictions.
        "train": pooled_like_embeddings(len(labels), generator, labels, signal=0.2),
        "val": pooled_like_embeddings(400, generator, signal=0.2),
    }
    probabilities = {}
    for name, positive_weight in (("plain", None), ("balanced", float((labels == 0).sum() / (labels == 1).sum()))):
        callback = OnlineLinearHead(BINARY, positive_weight=positive_weight, probe_images=probe_images(splits))
        fit(callback, splits)
        assert callback.head is not None
        with torch.no_grad():
            probabilities[name] = callback.head(splits["train"][0]).sigmoid().mean().item()
    # Unweighted, the mean probability follows the 15% prevalence; balanced, positives weigh as much as negatives.
    assert probabilities["plain"] < 0.25 < 0.4 < probabilities["balanced"]


# --- DDP: the converged fit -----------------------------------------------------------------------------------------
WORLD_SIZE = 2


def fake_run(rank: int, world_size: int) -> tuple[SimpleNamespace, SimpleNamespace]:
    """The trainer and module attributes the fit uses, with gloo collectives behind all_gather and broadcast."""

    def all_gather(tensor: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.stack(parts)

    def broadcast(value: Any, src: int = 0) -> Any:
        holder = [value]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]

    import contextlib

    precision = SimpleNamespace(forward_context=contextlib.nullcontext)
    trainer = SimpleNamespace(
        world_size=world_size,
        global_rank=rank,
        sanity_checking=False,
        precision_plugin=precision,
        strategy=SimpleNamespace(broadcast=broadcast),
    )
    module = SimpleNamespace(
        feature_dim=FEATURES,
        device=torch.device("cpu"),
        hparams={},
        trainer=trainer,
        embedding_encoder=nn.Identity,
        all_gather=all_gather,
    )
    return trainer, module


def fit_on_shard(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    splits = embedding_splits()
    trainer, module = fake_run(rank, world_size)
    callback = OnlineLinearHead(BINARY, probe_images=probe_images(splits))
    features, labels = splits["val"]
    share = len(labels) // world_size
    callback._val_embeddings = [
        (features[rank * share : (rank + 1) * share], labels[rank * share : (rank + 1) * share])
    ]
    callback.fit_to_convergence(trainer, module)  # type: ignore[arg-type]
    assert callback.head is not None
    return {name: tensor.clone() for name, tensor in callback.head.state_dict().items()}


def ddp_worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(fit_on_shard(rank, WORLD_SIZE), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_fit_under_ddp_gives_every_process_the_single_process_head(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(ddp_worker, args=(port, str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    heads = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]
    single = fit_on_shard(rank=0, world_size=1)
    for name, tensor in single.items():
        assert torch.equal(heads[0][name], heads[1][name]), name  # bit for bit: rank 0's fit is broadcast
        # Every process embedded its share of the training split and chose on the gathered validation set.
        torch.testing.assert_close(heads[0][name], tensor, rtol=1e-4, atol=1e-4, msg=name)
