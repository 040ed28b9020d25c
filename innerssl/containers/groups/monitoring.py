"""The monitoring group of SSL runs: the online linear head and the kNN monitor on a labeled dataset, and the kNN
settings that the classifier's kNN evaluation shares."""

from __future__ import annotations

from typing import ClassVar

import param
import pytorch_lightning as pl

from innerssl.eval.knn import knn_monitor_for
from innerssl.eval.online_linear import (
    DEFAULT_LEARNING_RATE,
    DEFAULT_STATISTICS_MOMENTUM,
    DEFAULT_STEPS_PER_BATCH,
    online_linear_head_for,
)


class KNNParameters(param.Parameterized):
    """kNN votes of labeled training embeddings: the SSL monitor and the comparison's knn mode."""

    group_title: ClassVar[str] = "kNN"
    group_order: ClassVar[int] = 65

    knn_k: int = param.Integer(
        20, bounds=(1, None), doc="kNN monitor: number of nearest labeled training embeddings that vote."
    )

    knn_temperature: float = param.Number(
        0.07, bounds=(1e-4, None), doc="kNN monitor: votes are weighted by exp(cosine similarity / temperature)."
    )


class MonitoringParameters(KNNParameters):
    """What an SSL run reports about its encoder while it trains: online linear head, kNN."""

    group_title: ClassVar[str] = "Monitoring"
    group_order: ClassVar[int] = 60

    learning_rate_linear_head_during_ssl_training: float = param.Number(
        DEFAULT_LEARNING_RATE,
        bounds=(0, None),
        doc="Learning rate of the online linear head's AdamW steps on standardised embeddings (between the converged "
        "fits of --linear_head_fit_at_validation, or alone without them).",
    )

    knn_every_n_epochs: int = param.Integer(
        1,
        bounds=(0, None),
        doc="kNN monitor: run every N epochs (and at the last); 0 turns it off. Costs one pass over the labeled "
        "train and val sets.",
    )

    use_balanced_binary_loss_for_linear_head: bool = param.Boolean(
        False, doc="Weight the positive class by negatives/positives in binary linear-head losses."
    )

    linear_head_fit_at_validation: bool = param.Boolean(
        True,
        doc="At every validation, embed the linear head's labeled training split with the current encoder (preprocess "
        "only, no augmentation) and replace the online head by a logistic regression fitted to convergence on those "
        "embeddings (L-BFGS on standardised features, L2 strength chosen by validation AUROC, as the frozen "
        "linear-probe classifier): linear_head/val_* then read what a converged linear probe of the encoder reads. "
        "Costs one no-grad pass over the labeled training split per validation (as the kNN monitor) and the fit. "
        "False: the head learns from the streaming steps only, which can lag a converged probe by 0.05-0.1 AUROC.",
    )

    linear_head_steps_per_batch: int = param.Integer(
        DEFAULT_STEPS_PER_BATCH,
        bounds=(1, None),
        doc="Optimizer steps of the online linear head on each labeled batch: the batch is embedded once, so further "
        "steps cost next to nothing beside the encoder pass.",
    )

    linear_head_statistics_momentum: float = param.Number(
        DEFAULT_STATISTICS_MOMENTUM,
        bounds=(1e-4, 1),
        doc="Weight of each labeled batch in the running mean and variance that standardise the online head's "
        "embeddings (moving averages that follow the encoder's drift: 0.1 weighs about the last 10 batches); the "
        "converged fit at validation resets them to the labeled training split's.",
    )

    def monitor_callbacks(self, datamodule: pl.LightningDataModule) -> list[pl.Callback]:
        """The online linear head and the kNN monitor on the datamodule's labeled splits (none without them)."""
        splits = datamodule.linear_head_splits  # type: ignore[attr-defined]
        if splits is None:
            return []
        head = online_linear_head_for(
            datamodule,
            learning_rate=self.learning_rate_linear_head_during_ssl_training,
            steps_per_batch=self.linear_head_steps_per_batch,
            statistics_momentum=self.linear_head_statistics_momentum,
            fit_at_validation=self.linear_head_fit_at_validation,
            positive_weight=self.positive_weight(splits, self.use_balanced_binary_loss_for_linear_head),
            seed=self.random_seed,
        )
        callbacks: list[pl.Callback] = [head] if head is not None else []
        knn = knn_monitor_for(
            datamodule, k=self.knn_k, temperature=self.knn_temperature, every_n_epochs=self.knn_every_n_epochs
        )
        if knn is not None:
            callbacks.append(knn)
        return callbacks
