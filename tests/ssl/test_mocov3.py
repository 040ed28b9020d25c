import pytest
import torch
import torch.nn.functional as F

from configs.demo import DemoMoCoV3
from innerssl.ssl import ssl_method
from innerssl.ssl.mocov3 import MoCoV3, moco_v3_contrastive_loss
from tests.ssl.fixed_batch import downstream_state_keys, fixed_views, losses_of_steps


def tiny_mocov3(**kwargs) -> MoCoV3:
    return MoCoV3(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def reference_ctr(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo v3's contrastive loss written out: each query against every key, its own image's key positive."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    losses = []
    for i in range(q.shape[0]):
        logits = torch.stack([q[i] @ k[j] / temperature for j in range(k.shape[0])])
        losses.append(-logits[i] + torch.logsumexp(logits, dim=0))
    return 2 * temperature * torch.stack(losses).mean()


def test_contrastive_loss_equals_reference():
    torch.manual_seed(0)
    q, k = torch.randn(6, 16), torch.randn(6, 16)
    for temperature in (1.0, 0.2):
        expected = reference_ctr(q, k, temperature)
        assert torch.allclose(moco_v3_contrastive_loss(q, k, temperature), expected, atol=1e-5)


def test_momentum_network_starts_as_the_query_network_and_gets_no_gradients():
    torch.manual_seed(0)
    model = tiny_mocov3()
    for online, momentum in model.momentum_pairs():
        assert all(not p.requires_grad for p in momentum.parameters())
        for (name, a), b in zip(online.state_dict().items(), momentum.state_dict().values()):
            assert torch.equal(a, b), name
    view0, view1 = fixed_views()
    model.ssl_loss(view0, view1).backward()
    momentum_parameters = [*model.momentum_encoder.parameters(), *model.momentum_projector.parameters()]
    assert all(p.grad is None for p in momentum_parameters)
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_ema_update_matches_formula_and_momentum_follows_the_cosine_schedule():
    torch.manual_seed(0)
    model = tiny_mocov3(base_momentum=0.99)
    with torch.no_grad():
        for parameter in [*model.encoder.parameters(), *model.projector.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    pairs = {
        "network.conv1.weight": (model.encoder, model.momentum_encoder),
        "layers.0.weight": (model.projector, model.momentum_projector),
    }
    before = {name: (q.state_dict()[name].clone(), k.state_dict()[name].clone()) for name, (q, k) in pairs.items()}
    model.update_target(0.9)
    for name, (online, momentum) in before.items():
        assert torch.allclose(pairs[name][1].state_dict()[name], 0.9 * momentum + 0.1 * online, atol=1e-6), name
    for fraction, expected in ((0.0, 0.99), (0.5, 0.995), (1.0, 1.0)):
        model._fraction_at_step_start = fraction
        assert model.current_momentum() == pytest.approx(expected)


def test_downstream_encoder_is_the_momentum_encoder():
    model = tiny_mocov3()
    assert model.embedding_encoder() is model.momentum_encoder
    prefix = model.embedding_encoder_prefix()
    assert prefix == "momentum_encoder."
    assert downstream_state_keys(model, prefix) == set(model.momentum_encoder.state_dict())


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    losses = losses_of_steps(tiny_mocov3())
    assert losses[-1] < losses[0] * 0.9


def test_container_passes_the_mocov3_parameters():
    container = DemoMoCoV3(mocov3_temperature=0.5, mocov3_base_momentum=0.97, projection_hidden_dim=32)
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    assert isinstance(model, MoCoV3)
    assert model.hparams.temperature == 0.5 and model.hparams.base_momentum == 0.97
