import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from innerssl.data.batches import LINEAR_HEAD_BATCH_KEY, SSL_BATCH_KEY
from innerssl.data.datasets.base import LabelInfo
from innerssl.eval.online_linear import OnlineLinearHead
from innerssl.ssl.simclr import SimCLR

LABELS = LabelInfo("binary", ("no", "yes"))


class FrozenSimCLR(SimCLR):
    """SimCLR whose optimizer has a zero learning rate, so only the linear head could change the encoder."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


class PairedLoaders(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(32, 1, 32, 32, generator=generator)
        self.labels = torch.arange(32) % 2
        # Make the label visible in the pixels so the head has something to learn.
        self.images[self.labels == 1, :, :8, :8] += 1.0

    def _two_views(self):
        return [((image, image.flip(-1)), -1) for image in self.images]

    def train_dataloader(self):
        ssl = DataLoader(self._two_views(), batch_size=8)
        labeled = DataLoader(TensorDataset(self.images, self.labels), batch_size=8)
        return {SSL_BATCH_KEY: ssl, LINEAR_HEAD_BATCH_KEY: labeled}

    def val_dataloader(self):
        return [
            DataLoader(self._two_views(), batch_size=8),
            DataLoader(TensorDataset(self.images, self.labels), batch_size=8),
        ]


def fit(module, callback, epochs=2, **trainer_kwargs):
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=PairedLoaders())
    return trainer


def test_logs_train_and_val_metrics_every_epoch():
    torch.manual_seed(0)
    module = FrozenSimCLR(projection_hidden_dim=16, projection_dim=8)
    callback = OnlineLinearHead(LABELS, learning_rate=1e-2)
    trainer = fit(module, callback)
    for split in ("train", "val"):
        for metric in ("accuracy", "auroc", "auprc"):
            value = float(trainer.callback_metrics[f"linear_head/{split}_{metric}"])
            assert 0.0 <= value <= 1.0
        assert float(trainer.callback_metrics[f"linear_head/{split}_loss"]) > 0
    # The label is a bright corner: a linear head on any reasonable features separates it.
    assert float(trainer.callback_metrics["linear_head/val_auroc"]) > 0.7


def test_linear_head_batches_do_not_touch_the_encoder():
    torch.manual_seed(0)
    module = SimCLR(projection_hidden_dim=16, projection_dim=8)
    callback = OnlineLinearHead(LABELS, learning_rate=1e-2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, max_epochs=1)
    trainer.strategy.connect(module)
    module.trainer = trainer
    module.train()
    before = {k: v.clone() for k, v in module.encoder.state_dict().items()}
    data = PairedLoaders()
    batch = {LINEAR_HEAD_BATCH_KEY: (data.images[:8], data.labels[:8])}
    for _ in range(3):
        callback.on_train_batch_end(trainer, module, None, batch, 0)
    after = module.encoder.state_dict()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), f"encoder {name} changed"
    assert module.encoder.training, "the encoder's training mode must be restored"
    assert any(p.grad is None for p in module.encoder.parameters())


def test_state_dict_round_trip_restores_head_and_optimizer():
    torch.manual_seed(0)
    module = FrozenSimCLR(projection_hidden_dim=16, projection_dim=8)
    callback = OnlineLinearHead(LABELS, learning_rate=1e-2)
    fit(module, callback, epochs=1)
    state = callback.state_dict()
    assert set(state) == {"head", "optimizer"}
    assert state["optimizer"]["state"], "optimizer moments must be saved"
    restored = OnlineLinearHead(LABELS, learning_rate=1e-2)
    restored.load_state_dict(state)
    head = restored._ensure_head(module)
    for name, tensor in state["head"].items():
        assert torch.equal(head.state_dict()[name], tensor)
    assert restored.optimizer.state_dict()["state"][0]["step"] == state["optimizer"]["state"][0]["step"]
