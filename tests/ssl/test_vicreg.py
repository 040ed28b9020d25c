import torch

from configs.demo import DemoVICReg
from innerssl.ssl import ssl_method
from innerssl.ssl.vicreg import VICReg
from tests.ssl.fixed_batch import downstream_state_keys, losses_of_steps


def tiny_vicreg(**kwargs) -> VICReg:
    return VICReg(encoder_name="resnet18", in_channels=1, projection_hidden_dim=64, projection_dim=32, **kwargs)


def test_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    losses = losses_of_steps(tiny_vicreg())
    assert losses[-1] < losses[0] * 0.8


def test_downstream_encoder_is_the_encoder():
    model = tiny_vicreg()
    assert model.embedding_encoder() is model.encoder
    assert model.embedding_encoder_prefix() == "encoder."
    assert downstream_state_keys(model, model.embedding_encoder_prefix()) == set(model.encoder.state_dict())


def test_container_passes_the_vicreg_weights():
    container = DemoVICReg(
        vicreg_invariance_weight=10.0, vicreg_variance_weight=20.0, vicreg_covariance_weight=2.0, projection_dim=16
    )
    model = ssl_method(container.ssl_training_type)(**container.method_arguments())
    assert isinstance(model, VICReg)
    criterion = model.criterion
    assert (criterion.lambda_param, criterion.mu_param, criterion.nu_param) == (10.0, 20.0, 2.0)
    assert model.projector(torch.randn(4, model.feature_dim)).shape == (4, 16)
