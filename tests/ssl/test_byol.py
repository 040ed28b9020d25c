import copy

import torch

from innerssl.ssl.byol import BYOL


def tiny_byol(**kwargs) -> BYOL:
    return BYOL(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def test_ema_update_matches_formula():
    torch.manual_seed(0)
    model = tiny_byol()
    with torch.no_grad():
        for parameter in model.encoder.parameters():
            parameter.add_(torch.randn_like(parameter))
    online = copy.deepcopy(model.encoder.state_dict())
    target = copy.deepcopy(model.target_encoder.state_dict())
    momentum = 0.9
    model.update_target(momentum)
    updated = model.target_encoder.state_dict()
    name = "network.conv1.weight"
    expected = momentum * target[name] + (1 - momentum) * online[name]
    assert torch.allclose(updated[name], expected, atol=1e-6)
    assert not torch.allclose(updated[name], target[name])


def test_target_network_gets_no_gradients_and_downstream_encoder_is_target():
    model = tiny_byol()
    assert all(not p.requires_grad for p in model.target_encoder.parameters())
    assert model.embedding_encoder() is model.target_encoder
    assert model.embedding_encoder_prefix() == "target_encoder."


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny_byol()
    images = torch.rand(8, 1, 32, 32)
    view0, view1 = images, images.flip(-1) * 0.9
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        model.update_target(0.99)
        loss = model.ssl_loss(view0, view1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert -1.0 <= min(losses) <= 1.0
    assert losses[-1] < losses[0] - 0.05
