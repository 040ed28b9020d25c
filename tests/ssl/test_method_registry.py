"""The method registry: every method's own parameters become flags with the module's defaults."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from configs.demo import DemoBYOL, DemoDINO
from innerssl.containers.ssl import SSLContainer
from innerssl.errors import UserError
from innerssl.outputs.checkpoints import encoder_spec_of, load_checkpoint
from innerssl.registry import find_model
from innerssl.runner import main
from innerssl.ssl import METHODS
from innerssl.ssl.parameters import method_parameters, own_arguments
from tests.conftest import tiny_demo_flags

PLUGIN_METHOD_CONFIG = Path(__file__).parent / "plugin_method_config.py"


def as_flag_value(value):
    return list(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("name", METHODS.names())
def test_command_line_defaults_are_the_module_defaults(name):
    method = METHODS.get(name)
    container = SSLContainer(ssl_training_type=name)
    signature = {argument: parameter for argument, parameter, _ in own_arguments(method)}
    parameters = method_parameters(method)
    assert {p.argument for p in parameters.values()} == set(signature)  # every own argument has a flag
    for flag, parameter in parameters.items():
        module_default = as_flag_value(signature[parameter.argument].default)
        assert getattr(container, flag) == module_default, flag
        assert type(container).parameters()[flag].default == module_default, flag
        assert parameter.doc, f"{name}.{parameter.argument} has no entry in parameter_docs"
    # What a run with no method flags passes to the module is exactly the module's defaults.
    assert container.method_hyperparameters() == {
        argument: as_flag_value(parameter.default) for argument, parameter in signature.items()
    }


@pytest.mark.parametrize("name", METHODS.names())
def test_help_lists_the_chosen_methods_parameters_and_no_other(name, capsys):
    assert main(["--model=DemoBYOL", f"--ssl_training_type={name}", "--help"]) == 0
    text = capsys.readouterr().out
    own = set(method_parameters(METHODS.get(name)))
    for flag in own:
        assert f"--{flag} " in text
    for other in METHODS.names():
        for flag in set(method_parameters(METHODS.get(other))) - own:
            assert f"--{flag} " not in text, (name, flag)


def test_a_flag_of_another_method_names_that_method():
    with pytest.raises(UserError, match="It is a parameter of DINO, not of BYOL: add --ssl_training_type=DINO"):
        DemoBYOL().apply_flags({"dino_num_local_crops": "2"})


def test_the_method_flag_applies_first_whatever_the_order():
    container = DemoBYOL()
    container.apply_flags({"dino_num_local_crops": "2", "ssl_training_type": "DINO"})
    assert container.method_hyperparameters()["num_local_crops"] == 2
    assert container.config_dict()["dino_num_local_crops"] == 2 and "byol_base_momentum" not in container.config_dict()


def test_thin_config_values_are_the_defaults_and_flags_override_them():
    assert DemoDINO().dino_output_dim == 2048  # the config's value
    assert SSLContainer(ssl_training_type="DINO").dino_output_dim == 65536  # the module's
    container = DemoDINO(dino_output_dim=128)
    assert container.method_hyperparameters()["output_dim"] == 128
    module_arguments = container.method_arguments()
    assert module_arguments["projection_hidden_dim"] == 1024 and "byol_base_momentum" not in module_arguments


def test_switching_method_swaps_the_parameters():
    container = DemoBYOL()
    assert container.byol_base_momentum == 0.9
    container.ssl_training_type = "SimCLR"
    assert container.simclr_temperature == 0.1
    assert "byol_base_momentum" not in type(container).parameters()
    assert type(container).__name__ == "DemoBYOL" and isinstance(container, DemoBYOL)


def test_an_unknown_method_and_a_misspelt_config_value_are_refused():
    with pytest.raises(UserError, match="Unknown SSL method 'SimCLRR'.*Did you mean 'SimCLR'"):
        SSLContainer(ssl_training_type="SimCLRR")

    class Typo(DemoBYOL):
        byol_base_momentun = 0.5

    with pytest.raises(UserError, match="Typo sets byol_base_momentun.*Did you mean byol_base_momentum"):
        Typo()

    class OutOfBounds(DemoBYOL):
        byol_base_momentum = 1.5

    with pytest.raises(UserError, match="OutOfBounds.byol_base_momentum = 1.5 is not valid for BYOL"):
        OutOfBounds()
    with pytest.raises(UserError, match="--byol_base_momentum=2 is not valid"):
        DemoBYOL().apply_flags({"byol_base_momentum": "2"})


def test_a_config_module_adds_a_method_and_an_encoder(tmp_path):
    flags = [flag for flag in tiny_demo_flags(tmp_path, num_epochs=1) if not flag.startswith("--projection")]
    common = [f"--config_module={PLUGIN_METHOD_CONFIG}", *flags]
    with pytest.raises(UserError, match="--projection_dim .*parameter of BYOL, .*not of RotationPrediction"):
        find_model("PluginRotation", [str(PLUGIN_METHOD_CONFIG)])().apply_flags({"projection_dim": "8"})
    assert main(["--model=PluginRotation", *common, "--rotation_label_smoothing=0.2"]) == 0
    last = tmp_path / "outputs" / "PluginRotation" / "test" / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    assert checkpoint["innerssl"]["method"] == "RotationPrediction"
    assert checkpoint["hyper_parameters"]["label_smoothing"] == 0.2
    assert encoder_spec_of(checkpoint["innerssl"]).options == {"width": 12}
    assert checkpoint["state_dict"]["head.weight"].shape == (4, 12)
    assert checkpoint["global_step"] > 0
    signature = inspect.signature(METHODS.get("RotationPrediction").__init__)
    assert signature.parameters["label_smoothing"].default == 0.0  # the flag overrode the config's 0.1
