import math
import threading

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from innerssl.augment.config import parse_augmentation_config
from innerssl.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.datamodule import SSLDataModule
from innerssl.data.datasets.base import DatasetSplits, LabelInfo
from innerssl.data.pipeline import ImageStream
from innerssl.eval.knn import KNNMonitor, gather_shards, knn_monitor_for, knn_vote_probabilities
from innerssl.eval.metrics import classification_metrics

BINARY = LabelInfo("binary", ("no", "yes"))
MULTICLASS = LabelInfo("multiclass", ("a", "b", "c", "d"))
MULTILABEL = LabelInfo("multilabel", ("x", "y", "z"))


def reference_probabilities(queries, bank, labels, label_info, k, temperature):
    """Brute force, one query at a time, with the unshifted weights exp(sim / T)."""
    rows = []
    for query in queries:
        similarities = [float(query @ b / (query.norm() * b.norm())) for b in bank]
        order = sorted(range(len(bank)), key=lambda i: -similarities[i])[:k]
        weights = {i: math.exp(similarities[i] / temperature) for i in order}
        if label_info.task == "multilabel":
            row = []
            for j in range(labels.shape[1]):
                known = [i for i in order if not math.isnan(float(labels[i, j]))]
                total = sum(weights[i] for i in known)
                row.append(sum(weights[i] * float(labels[i, j]) for i in known) / total if known else 0.5)
        else:
            num_classes = 2 if label_info.task == "binary" else len(label_info.class_names)
            total = sum(weights.values())
            row = [sum(weights[i] for i in order if int(labels[i]) == c) / total for c in range(num_classes)]
            if label_info.task == "binary":
                row = row[1]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32)


def random_labels(label_info, count, generator):
    if label_info.task == "binary":
        return torch.randint(0, 2, (count,), generator=generator)
    if label_info.task == "multiclass":
        return torch.randint(0, len(label_info.class_names), (count,), generator=generator)
    labels = torch.randint(0, 2, (count, len(label_info.class_names)), generator=generator).float()
    labels[torch.rand(labels.shape, generator=generator) < 0.3] = math.nan
    return labels


@pytest.mark.parametrize("label_info", [BINARY, MULTICLASS, MULTILABEL], ids=lambda info: info.task)
def test_votes_match_brute_force_reference(label_info):
    generator = torch.Generator().manual_seed(0)
    bank = torch.randn(40, 6, generator=generator) * 3  # not normalised: cosine must not depend on the norm
    queries = torch.randn(15, 6, generator=generator)
    labels = random_labels(label_info, 40, generator)
    for k, temperature in ((5, 0.07), (20, 0.5)):
        expected = reference_probabilities(queries, bank, labels, label_info, k, temperature)
        actual = knn_vote_probabilities(queries, bank, labels, label_info, k, temperature, chunk_size=4)
        assert actual.shape == expected.shape
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("label_info", [BINARY, MULTICLASS, MULTILABEL], ids=lambda info: info.task)
def test_chunking_gives_the_unchunked_result(label_info):
    generator = torch.Generator().manual_seed(1)
    bank = torch.randn(300, 16, generator=generator)
    queries = torch.randn(101, 16, generator=generator)
    labels = random_labels(label_info, 300, generator)
    whole = knn_vote_probabilities(queries, bank, labels, label_info, chunk_size=1000)
    for chunk_size in (1, 7, 100):
        chunked = knn_vote_probabilities(queries, bank, labels, label_info, chunk_size=chunk_size)
        torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)


def test_temperature_weights_close_neighbours_more():
    # One close neighbour of class 1 against two farther ones of class 0 (k = 3).
    bank = torch.tensor([[1.0, 0.2], [0.2, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    similarities = torch.nn.functional.normalize(bank, dim=1) @ query[0]
    for temperature in (0.05, 0.5, 5.0):
        weights = (similarities / temperature).exp()
        expected = weights[0] / weights.sum()
        actual = knn_vote_probabilities(query, bank, labels, BINARY, k=3, temperature=temperature)
        torch.testing.assert_close(actual, expected.reshape(1))
    sharp = knn_vote_probabilities(query, bank, labels, BINARY, k=3, temperature=0.05)
    flat = knn_vote_probabilities(query, bank, labels, BINARY, k=3, temperature=100.0)
    assert sharp.item() > 0.99  # a low temperature follows the nearest neighbour
    assert abs(flat.item() - 1 / 3) < 0.01  # a high one tends to the plain majority vote


def test_k_larger_than_the_bank_uses_the_whole_bank():
    generator = torch.Generator().manual_seed(2)
    bank = torch.randn(5, 4, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 0])
    queries = torch.randn(3, 4, generator=generator)
    probabilities = knn_vote_probabilities(queries, bank, labels, MULTICLASS, k=50, temperature=0.1)
    torch.testing.assert_close(probabilities, reference_probabilities(queries, bank, labels, MULTICLASS, 5, 0.1))
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(3))
    with pytest.raises(ValueError, match="non-empty bank"):
        knn_vote_probabilities(queries, bank[:0], labels[:0], MULTICLASS)


def test_multilabel_label_nobody_knows_is_one_half():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([[1.0, math.nan], [0.0, math.nan]])
    probabilities = knn_vote_probabilities(
        torch.tensor([[1.0, 0.1]]), bank, labels, LabelInfo("multilabel", ("a", "b"))
    )
    assert probabilities[0, 1].item() == 0.5
    assert 0.5 < probabilities[0, 0].item() <= 1.0


def test_gather_shards_drops_the_padding():
    shares = [torch.tensor([[0.0], [2.0], [4.0]]), torch.tensor([[1.0], [3.0]])]
    results = run_as_processes(2, lambda rank, gather: gather_shards(shares[rank], 3, gather))
    for result in results:
        assert sorted(result.flatten().tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0]


# --- simulated DDP: threads with an all_gather that stacks every "process"'s tensor -------------------------
def run_as_processes(world_size, function):
    barrier = threading.Barrier(world_size)
    slots = [None] * world_size
    results = [None] * world_size
    errors = []

    def all_gather_for(rank):
        def all_gather(tensor):
            slots[rank] = tensor.clone()
            barrier.wait()
            stacked = torch.stack(slots)
            barrier.wait()
            return stacked

        return all_gather

    def target(rank):
        try:
            results[rank] = function(rank, all_gather_for(rank))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(rank,)) for rank in range(world_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return results


def labeled_images(count, seed):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(count, 1, 8, 8, generator=generator)
    labels = torch.arange(count) % 2
    images[labels == 1, :, :3, :3] += 1.0
    return TensorDataset(images, labels)


def test_distributed_evaluation_equals_single_process():
    # 13 training and 7 validation images: the shares of 2 and 3 processes are uneven.
    train, val = labeled_images(13, 0), labeled_images(7, 1)
    projection = torch.randn(64, 5, generator=torch.Generator().manual_seed(3))

    def embed_fn(images):
        return images.flatten(1) @ projection

    monitor = KNNMonitor(BINARY, train, val, k=4, temperature=0.1, chunk_size=2, batch_size=3)
    single = monitor.evaluate(embed_fn, torch.device("cpu"), 5)
    bank = embed_fn(train.tensors[0])
    probabilities = knn_vote_probabilities(embed_fn(val.tensors[0]), bank, train.tensors[1], BINARY, 4, 0.1)
    assert single == pytest.approx(classification_metrics(probabilities, val.tensors[1], BINARY), nan_ok=True)
    for world_size in (2, 3):
        results = run_as_processes(
            world_size,
            lambda rank, gather, world_size=world_size: monitor.evaluate(
                embed_fn, torch.device("cpu"), 5, rank=rank, world_size=world_size, all_gather=gather
            ),
        )
        for metrics in results:
            assert metrics == pytest.approx(single, nan_ok=True)


# --- inside a Lightning fit -----------------------------------------------------------------------------------
def frozen_simclr():
    """SimCLR whose optimizer has a zero learning rate: only BatchNorm statistics move in training steps."""
    from innerssl.ssl.simclr import SimCLR

    class FrozenSimCLR(SimCLR):
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.0)

    return FrozenSimCLR(projection_hidden_dim=16, projection_dim=8)


class PairedLoaders(pl.LightningDataModule):
    def __init__(self, labeled):
        super().__init__()
        self.labeled = labeled
        self.images = labeled.tensors[0]

    def train_dataloader(self):
        ssl = DataLoader([((image, image.flip(-1)), -1) for image in self.images], batch_size=8)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: DataLoader(self.labeled, batch_size=8)}

    def val_dataloader(self):
        return [DataLoader([((image, image.flip(-1)), -1) for image in self.images], batch_size=8)]


class EncoderSnapshot(pl.Callback):
    """Records the downstream encoder's full state (weights and BatchNorm buffers) at validation epoch end."""

    def __init__(self):
        self.states = []

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            encoder = pl_module.embedding_encoder()
            self.states.append(({k: v.clone() for k, v in encoder.state_dict().items()}, encoder.training))


def test_monitor_inside_fit_logs_metrics_and_leaves_the_encoder_untouched(monkeypatch):
    torch.manual_seed(0)
    train, val = labeled_images(24, 0), labeled_images(16, 1)
    train = TensorDataset(torch.nn.functional.interpolate(train.tensors[0], size=32), train.tensors[1])
    val = TensorDataset(torch.nn.functional.interpolate(val.tensors[0], size=32), val.tensors[1])
    module = frozen_simclr()
    monitor = KNNMonitor(BINARY, train, val, k=5, chunk_size=4, every_n_epochs=2, batch_size=8)
    runs = []
    evaluate = monitor.evaluate
    monkeypatch.setattr(monitor, "evaluate", lambda *a, **kw: runs.append(1) or evaluate(*a, **kw))
    before, after = EncoderSnapshot(), EncoderSnapshot()
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[before, monitor, after],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(module, datamodule=PairedLoaders(train))
    assert len(runs) == 2  # epoch 2 (every 2nd) and epoch 3 (the last), not during the sanity check
    for name in ("accuracy", "auroc", "auprc"):
        assert 0.0 <= float(trainer.callback_metrics[f"knn/val_{name}"]) <= 1.0
    assert float(trainer.callback_metrics["knn/val_auroc"]) > 0.7  # the label is a bright corner
    assert len(before.states) == len(after.states) == 3
    for (state_before, training_before), (state_after, training_after) in zip(before.states, after.states):
        assert training_before == training_after
        for name, tensor in state_before.items():
            assert torch.equal(tensor, state_after[name]), f"encoder {name} changed"
    assert any("running_mean" in name for name in before.states[0][0])


def brightening_config(factor):
    """A 'random' colour jitter that can only multiply the brightness by ``factor`` (no randomness to mock)."""
    return parse_augmentation_config(
        {"augmentation": {"use_random_color": True, "random_color": {"brightness": factor - 1, "contrast": 0}}},
        "test",
    )


@pytest.mark.parametrize("on_device", [False, True], ids=["per_sample", "on_device"])
def test_factory_uses_the_linear_head_eval_data(on_device):
    labeled = labeled_images(10, 0)
    splits = DatasetSplits(train=labeled, val=labeled_images(4, 1), test=None, label_info=BINARY)
    eval_config = brightening_config(2.0).preprocess_only()
    datamodule = SSLDataModule(
        ssl_splits=splits,
        ssl_stream=ImageStream(brightening_config(2.0), 1, on_device, views=2),
        ssl_batch_size=4,
        linear_head_splits=splits,
        linear_head_train_stream=ImageStream(brightening_config(2.0), 1, on_device),
        linear_head_eval_stream=ImageStream(eval_config, 1, on_device),
        linear_head_batch_size=3,
    )
    monitor = knn_monitor_for(datamodule, k=7, temperature=0.2, every_n_epochs=3)
    assert isinstance(monitor, KNNMonitor)
    assert (monitor.k, monitor.temperature, monitor.every_n_epochs, monitor.batch_size) == (7, 0.2, 3, 3)
    image, label = monitor.train_dataset[0]
    if on_device:
        assert monitor.device_transform is not None
        image = monitor.device_transform(image[None])[0]
    else:
        assert monitor.device_transform is None
    # The eval stream is the preprocess only: the images reach the encoder unaugmented (values kept).
    assert torch.allclose(image, labeled[0][0].clamp(0, 1)) and label == labeled[0][1]
    assert len(monitor.val_dataset) == 4
    assert knn_monitor_for(datamodule, every_n_epochs=0) is None
    no_labels = SSLDataModule(
        ssl_splits=splits, ssl_stream=ImageStream(brightening_config(2.0), 1, on_device, views=2), ssl_batch_size=4
    )
    assert knn_monitor_for(no_labels) is None
    with pytest.raises(ValueError, match="labeled"):
        KNNMonitor(LabelInfo("unlabeled"), labeled, labeled)
