import pytest
from torch import nn

from innerssl.optim import parameter_groups, warmup_cosine_factor_of_fraction


def test_norm_layers_and_biases_get_no_weight_decay():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2), nn.LayerNorm(2))
    decay, no_decay = parameter_groups([model], weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay["params"]) == 6  # conv bias, BN weight+bias, linear bias, LN weight+bias


def test_frozen_parameters_are_left_out():
    model = nn.Linear(3, 3)
    model.weight.requires_grad_(False)
    decay, no_decay = parameter_groups([model], 0.1)
    assert decay["params"] == [] and len(no_decay["params"]) == 1


def test_warmup_then_cosine():
    factor = warmup_cosine_factor_of_fraction
    assert factor(0.05, 0.1) == pytest.approx(0.5)
    assert factor(0.1, 0.1) == pytest.approx(1.0)
    assert factor(0.55, 0.1) == pytest.approx(0.5)
    assert factor(1.0, 0.1) == pytest.approx(0.0, abs=1e-9)
    assert 0 < factor(0.0, 0.1) < 0.01
    factors = [factor(f / 50, 0.0) for f in range(51)]
    assert factors[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors, factors[1:]))
