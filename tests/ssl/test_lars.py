import pytest
import torch
from lightly.utils.lars import LARS
from torch import nn

from configs.demo import DemoSimCLR
from innerssl.optim import create_optimizer, parameter_groups
from innerssl.ssl import ssl_method
from innerssl.ssl.vicreg import VICReg
from tests.ssl.fixed_batch import fixed_views


def test_lars_is_chosen_with_the_two_parameter_groups_and_a_step_changes_the_weights():
    torch.manual_seed(0)
    model = VICReg(
        projection_hidden_dim=32, projection_dim=16, learning_rate=0.5, weight_decay=1e-4, optimizer_name="lars"
    )
    model.learning_rate_factor = lambda: 1.0  # the warmup-cosine schedule needs a Trainer; its value is not tested
    configuration = model.configure_optimizers()
    optimizer = configuration["optimizer"]
    assert isinstance(optimizer, LARS)
    assert isinstance(configuration["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.LambdaLR)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert decay["momentum"] == 0.9 and decay["trust_coefficient"] == 1e-3
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.encoder.network.bn1.weight) in no_decay_ids and id(model.projector.layers[-1].bias) in no_decay_ids
    assert id(model.encoder.network.conv1.weight) in {id(p) for p in decay["params"]}

    conv, norm = model.encoder.network.conv1.weight, model.encoder.network.bn1.weight
    before = conv.detach().clone(), norm.detach().clone()
    view0, view1 = fixed_views()
    model.ssl_loss(view0, view1).backward()
    optimizer.step()
    assert not torch.equal(conv, before[0]) and not torch.equal(norm, before[1])


def test_lars_adapts_the_decayed_weights_only():
    """Weights: SGD step scaled by trust * |w| / (|g| + wd |w|), with weight decay; norms and biases: plain SGD."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    optimizer = create_optimizer(parameter_groups([model], 0.1), "lars", 0.5, lars_trust_coefficient=0.01)
    model(torch.randn(5, 4)).pow(2).sum().backward()
    weight, bias, norm = model[0].weight, model[0].bias, model[1].weight
    expected = {}
    for parameter in (bias, norm):
        expected[parameter] = parameter.detach() - 0.5 * parameter.grad
    w, g = weight.detach(), weight.grad
    ratio = 0.01 * w.norm() / (g.norm() + 0.1 * w.norm() + 1e-8)
    expected[weight] = w - 0.5 * ratio * (g + 0.1 * w)
    expected = {p: e.clone() for p, e in expected.items()}
    optimizer.step()
    for parameter, value in expected.items():
        assert torch.allclose(parameter, value, atol=1e-6)


def test_adamw_stays_the_default_and_unknown_names_fail():
    model = nn.Linear(2, 2)
    assert isinstance(create_optimizer(parameter_groups([model], 0.1), "adamw", 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        create_optimizer(parameter_groups([model], 0.1), "sgd", 1e-3)


def test_container_passes_the_optimizer_to_every_method():
    container = DemoSimCLR(optimizer="lars", lars_momentum=0.8, lars_trust_coefficient=0.02)
    arguments = container.method_arguments()
    assert (arguments["optimizer_name"], arguments["lars_momentum"], arguments["lars_trust_coefficient"]) == (
        "lars",
        0.8,
        0.02,
    )
    model = ssl_method(container.ssl_training_type)(**arguments)
    assert model.hparams.optimizer_name == "lars" and model.hparams.lars_momentum == 0.8
    assert DemoSimCLR().method_arguments()["optimizer_name"] == "adamw"
