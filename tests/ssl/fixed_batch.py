"""A tiny fixed SSL batch and a few optimizer steps on it, shared by the SSL method tests."""

from __future__ import annotations

import torch

from innerssl.ssl.base import SSLModule
from innerssl.ssl.momentum import MomentumSSLModule


def fixed_views(channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """8 random 32 px images and a flipped, darkened second view of them."""
    images = torch.rand(8, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    return images, images.flip(-1) * 0.9


def losses_of_steps(model: SSLModule, steps: int = 8, learning_rate: float = 1e-3) -> list[float]:
    """The SSL loss before each of ``steps`` Adam steps on the fixed batch (EMA targets updated first, as in
    training)."""
    view0, view1 = fixed_views()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    losses = []
    for _ in range(steps):
        if isinstance(model, MomentumSSLModule):
            model.update_target(0.99)
        loss = model.ssl_loss(view0, view1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def downstream_state_keys(model: SSLModule, prefix: str) -> set[str]:
    """The encoder keys that a checkpoint's ``prefix`` selects from the module's state_dict."""
    return {key[len(prefix) :] for key in model.state_dict() if key.startswith(prefix)}
