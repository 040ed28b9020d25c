import pytest
import torch
from torch import nn

from innerssl.optim import parameter_groups, steps_for_epochs, warmup_cosine_factor


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
    assert warmup_cosine_factor(0, 10, 110) == pytest.approx(0.1)
    assert warmup_cosine_factor(9, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine_factor(10, 10, 110) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine_factor(110, 10, 110) == pytest.approx(0.0, abs=1e-9)
    assert steps_for_epochs(2, total_steps=100, total_epochs=10) == 20
    factors = [warmup_cosine_factor(s, 0, 50) for s in range(50)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    assert isinstance(torch.tensor(factors[0]).item(), float)
