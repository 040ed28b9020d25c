import pytest
import torch

from configs.demo import DemoDINO
from innerssl.ssl import ssl_method
from innerssl.ssl.dino import DINO
from tests.ssl.fixed_batch import downstream_state_keys, fixed_views, losses_of_steps


def tiny_dino(**kwargs) -> DINO:
    return DINO(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def test_teacher_starts_as_the_student_and_gets_no_gradients():
    torch.manual_seed(0)
    model = tiny_dino(output_dim=128)
    for online, teacher in model.momentum_pairs():
        assert all(not p.requires_grad for p in teacher.parameters())
        for (name, a), b in zip(online.state_dict().items(), teacher.state_dict().values()):
            assert torch.equal(a, b), name
    view0, view1 = fixed_views()
    model.ssl_loss(view0, view1).backward()
    assert all(p.grad is None for p in [*model.teacher_encoder.parameters(), *model.teacher_head.parameters()])
    assert model.encoder.network.conv1.weight.grad is not None


def test_ema_update_matches_formula_and_momentum_follows_the_cosine_schedule():
    torch.manual_seed(0)
    model = tiny_dino(output_dim=128, base_momentum=0.9)
    with torch.no_grad():
        for parameter in [*model.encoder.parameters(), *model.student_head.parameters()]:
            parameter.add_(torch.randn_like(parameter))
    names = [("encoder", "network.conv1.weight"), ("head", "last_layer.weight_v"), ("head", "layers.0.weight")]
    modules = {"encoder": (model.encoder, model.teacher_encoder), "head": (model.student_head, model.teacher_head)}
    before = {(m, n): (modules[m][0].state_dict()[n].clone(), modules[m][1].state_dict()[n].clone()) for m, n in names}
    model.update_target(0.8)
    for (module, name), (student, teacher) in before.items():
        expected = 0.8 * teacher + 0.2 * student
        assert torch.allclose(modules[module][1].state_dict()[name], expected, atol=1e-6), name
    for fraction, momentum in ((0.0, 0.9), (0.5, 0.95), (1.0, 1.0)):
        model._fraction_at_step_start = fraction
        assert model.current_momentum() == pytest.approx(momentum)


def test_downstream_encoder_is_the_teacher_encoder():
    model = tiny_dino(output_dim=64)
    assert model.embedding_encoder() is model.teacher_encoder
    prefix = model.embedding_encoder_prefix()
    assert prefix == "teacher_encoder."
    assert downstream_state_keys(model, prefix) == set(model.teacher_encoder.state_dict())
    assert model.teacher_encoder is not model.encoder


def test_validation_leaves_the_teacher_center_alone():
    model = tiny_dino(output_dim=64)
    view0, view1 = fixed_views()
    center = model.criterion.center.clone()
    model.eval()
    with torch.no_grad():
        model.ssl_loss(view0, view1)
    assert torch.equal(model.criterion.center, center)
    model.train()
    model.ssl_loss(view0, view1)
    assert not torch.equal(model.criterion.center, center)


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    losses = losses_of_steps(tiny_dino(output_dim=256))
    assert losses[-1] < losses[0] * 0.8


def test_container_passes_the_dino_parameters():
    container = DemoDINO(
        dino_output_dim=64,
        dino_teacher_temperature=0.05,
        dino_student_temperature=0.2,
        dino_base_momentum=0.95,
        projection_hidden_dim=32,
        projection_dim=16,
    )
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    assert isinstance(model, DINO)
    assert model.hparams.base_momentum == 0.95 and model.hparams.teacher_temperature == 0.05
    assert model.criterion.student_temp == 0.2 and model.criterion.center.shape[-1] == 64
    assert model.student_head.last_layer.weight_v.shape == (64, 16)
