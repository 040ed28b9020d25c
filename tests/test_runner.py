import subprocess
import sys

import pytest

from innerssl.errors import UserError
from innerssl.registry import available_models, find_model
from innerssl.runner import main, parse_flags
from tests.conftest import REPO_ROOT


def test_parse_flags_forms():
    flags = parse_flags(["--model=DemoBYOL", "--num_epochs", "3", "--resume", "--names=a,b"])
    assert flags == {"model": "DemoBYOL", "num_epochs": "3", "resume": None, "names": "a,b"}
    with pytest.raises(UserError, match="given twice"):
        parse_flags(["--a=1", "--a=2"])
    with pytest.raises(UserError, match="Unexpected argument"):
        parse_flags(["stray"])


def test_models_resolve_from_configs_package():
    models = available_models()
    for name in ("DemoBYOL", "DemoSimCLR", "DemoClassifier", "CIFAR10BYOL", "CIFAR10SimCLR", "SSLClassifierCIFAR"):
        assert name in models
    assert find_model("DemoBYOL").__name__ == "DemoBYOL"


def test_unknown_model_lists_available(capsys):
    assert main(["--model=DemoBYOLL"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "Unknown model 'DemoBYOLL'. Did you mean 'DemoBYOL'?" in error
    assert "DemoSimCLR" in error


def test_user_config_module_file(tmp_path, capsys):
    module = tmp_path / "my_configs.py"
    module.write_text("from configs.demo import DemoBYOL\n\nclass MyBYOL(DemoBYOL):\n    num_epochs = 3\n")
    assert main(["--model=MyBYOL", f"--config_module={module}", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Parameters of MyBYOL" in out
    assert "--num_epochs (int, default: 3)" in out


def test_help_lists_parameters_with_docs(capsys):
    assert main(["--model=DemoBYOL", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--ssl_training_type (str, default: BYOL)" in out
    assert "--byol_base_momentum (float, default: 0.9)" in out and "BYOL: initial EMA momentum" in out
    assert "Learning rate of the online linear head's AdamW steps" in out


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--model=DemoBYOL", "--not_a_param=1"], "Unknown parameter --not_a_param"),
        (["--model=DemoBYOL", "--ssl_training_type=MAEE"], "Unknown SSL method 'MAEE'. Did you mean 'MAE'?"),
        (["--model=DemoBYOL", "--ssl_training_type=MAE", "--max_num_gpus=0"], "MAE needs a timm ViT encoder"),
        (["--model=DemoBYOL", "--local_dataset=/no/such/folder"], "--local_dataset=/no/such/folder is not a folder"),
        (["--model=DemoBYOL", "--ssl_training_dataset_name=Nope"], "Unknown dataset 'Nope'"),
        (["--model=CIFAR10BYOL", "--max_num_gpus=0"], "CIFAR10 needs a folder: pass it with --local_dataset"),
        (["--model=DemoClassifier", "--local_weights_path=/no/such.ckpt"], "--local_weights_path=/no/such.ckpt"),
        (["--num_epochs=1"], "No --model given"),
    ],
)
def test_bad_input_gives_one_line_error_and_exit_code(flags, expected, tmp_path, capsys):
    assert main([*flags, f"--output_dir={tmp_path}"] if "--model" in flags[0] else flags) == 2
    error = capsys.readouterr().err.strip()
    assert expected in error
    assert error.count("\n") == 0 and "Traceback" not in error


def test_runner_script_exits_non_zero_without_traceback():
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "runner.py"), "--model=Nope"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: Unknown model 'Nope'")
    assert "Traceback" not in result.stderr


def test_monai_names_of_parameters_are_aliases() -> None:
    from configs.volumes import Hippocampus_UNETR

    container = Hippocampus_UNETR()
    container.apply_flags({"samples_per_volume": "2", "num_training_volumes": "6"})
    assert container.patches_per_image == 2 and container.num_training_images == 6
    with pytest.raises(UserError, match="--samples_per_volume is another name of --patches_per_image"):
        Hippocampus_UNETR().apply_flags({"patches_per_image": "3", "samples_per_volume": "2"})
    assert "Also --samples_per_volume." in " ".join(Hippocampus_UNETR.help_text().split())
    # MONAI's roi_size is x,y,z and --patch_size z,y,x: no alias that would silently transpose it.
    with pytest.raises(UserError, match="Unknown parameter --roi_size"):
        Hippocampus_UNETR().apply_flags({"roi_size": "96,96,32"})


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--ssl_training_type=MAE"], "MAE needs a timm ViT encoder"),
        (
            ["--ssl_training_type=DINO", "--ssl_encoder=timm:vit_tiny_patch16_224", "--encoder_options=img_size=64"],
            "DINO's local crops are smaller than its global views",
        ),
    ],
)
def test_a_method_refuses_its_encoder_before_any_data_is_read(flags, expected, tmp_path, capsys):
    cache = tmp_path / "cache"
    arguments = ["--model=DemoBYOL", *flags, f"--dataset_cache_dir={cache}", f"--output_dir={tmp_path / 'out'}"]
    assert main(arguments) == 2
    assert expected in capsys.readouterr().err
    # Neither the demo images nor a decode cache were made: the refusal cost nothing.
    assert not cache.exists() or not any(cache.iterdir())
