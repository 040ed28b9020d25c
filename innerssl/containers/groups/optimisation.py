"""The optimisation group every trained model has: peak learning rate, weight decay, warmup."""

from __future__ import annotations

from typing import ClassVar

import param


class OptimisationParameters(param.Parameterized):
    """AdamW (or the SSL method's optimizer) with linear warmup and cosine decay."""

    group_order: ClassVar[int] = 50
    group_title: ClassVar[str] = "Optimisation"

    learning_rate: float = param.Number(1e-3, bounds=(0, None), doc="Peak learning rate (after warmup).")

    weight_decay: float = param.Number(
        1e-6, bounds=(0, None), doc="Weight decay of the optimizer (not applied to norm layers and biases)."
    )

    warmup_epochs: float = param.Number(10, bounds=(0, None), doc="Epochs of linear learning-rate warmup.")
