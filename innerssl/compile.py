"""``torch.compile`` for the networks of a LightningModule, keeping checkpoints unchanged."""

from __future__ import annotations

import logging

from torch import nn

logger = logging.getLogger(__name__)

DEFAULT_BACKEND = "inductor"
"""torch.compile's default backend: generated Triton kernels on GPUs, C++ on the CPU."""


def compile_networks(module: nn.Module, backend: str | None = None) -> list[str]:
    """Compile every direct child network of ``module`` that has parameters, in place; returns their names.

    ``backend`` defaults to :data:`DEFAULT_BACKEND`.

    ``nn.Module.compile`` compiles the child's forward without wrapping it, so parameter names (and thus
    checkpoints, the momentum updates of BYOL-style targets and the classifier's encoder loading) stay the
    same. Children are compiled one by one rather than the LightningModule: its training step mixes several
    networks with Python-side logic (schedules, logging) that would only break the graph.
    """
    backend = backend or DEFAULT_BACKEND
    names = []
    for name, child in module.named_children():
        if any(True for _ in child.parameters()):
            child.compile(backend=backend)
            names.append(name)
    logger.info("torch.compile (%s): %s", backend, ", ".join(names) or "nothing to compile")
    return names
