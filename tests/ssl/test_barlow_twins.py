import torch

from configs.demo import DemoBarlowTwins
from innerssl.ssl import ssl_method
from innerssl.ssl.barlow_twins import BarlowTwins
from tests.ssl.fixed_batch import downstream_state_keys, losses_of_steps


def tiny_barlow_twins(**kwargs) -> BarlowTwins:
    return BarlowTwins(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    losses = losses_of_steps(tiny_barlow_twins())
    assert losses[-1] < losses[0] * 0.5


def test_downstream_encoder_is_the_encoder():
    model = tiny_barlow_twins()
    assert model.embedding_encoder() is model.encoder
    assert model.embedding_encoder_prefix() == "encoder."
    assert downstream_state_keys(model, model.embedding_encoder_prefix()) == set(model.encoder.state_dict())


def test_container_passes_lambda():
    container = DemoBarlowTwins(barlow_twins_lambda_param=0.01, projection_hidden_dim=32, projection_dim=16)
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    assert isinstance(model, BarlowTwins)
    assert model.criterion.lambda_param == 0.01
    assert model.projector(torch.randn(4, model.feature_dim)).shape == (4, 16)
