import torch
from torch import nn

from innerssl.compile import compile_networks


class TwoNetworks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4, 2)
        self.loss = nn.MSELoss()  # no parameters: nothing to compile

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(images))


def test_compiles_children_in_place_keeping_checkpoint_keys_and_outputs():
    torch.manual_seed(0)
    module = TwoNetworks()
    keys_before = list(module.state_dict())
    images = torch.rand(3, 1, 16, 16)
    expected = module(images)

    compiled = compile_networks(module, backend="eager")

    assert compiled == ["encoder", "head"]
    assert list(module.state_dict()) == keys_before  # checkpoints stay loadable by uncompiled code
    assert module.encoder._compiled_call_impl is not None and module.head._compiled_call_impl is not None
    assert module.loss._compiled_call_impl is None
    torch.testing.assert_close(module(images), expected)
    module(images).sum().backward()  # gradients flow through the compiled networks
    assert module.head.weight.grad is not None


def test_compiled_channels_last_run_writes_checkpoints_an_uncompiled_model_loads(tmp_path, monkeypatch):
    import innerssl.compile
    from innerssl.encoders import create_encoder
    from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint
    from innerssl.runner import main
    from tests.conftest import tiny_demo_flags

    # The eager backend traces with dynamo like inductor but needs no C++ build: seconds, not minutes.
    monkeypatch.setattr(innerssl.compile, "DEFAULT_BACKEND", "eager")
    flags = tiny_demo_flags(tmp_path, num_epochs=1, compile="true", channels_last="true")
    assert main(["--model=DemoSimCLR", *flags]) == 0
    checkpoint = tmp_path / "outputs" / "DemoSimCLR" / "test" / "checkpoints" / "last.ckpt"
    state = encoder_state_from_ssl_checkpoint(checkpoint, "resnet18", 1)
    assert not any("_orig_mod" in key for key in state)
    create_encoder("resnet18", 1).load_state_dict(state)  # strict: the same keys as an uncompiled encoder
