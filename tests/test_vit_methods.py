"""A timm ViT through BYOL, multi-crop DINO and MAE, on the demo and on the NIH sample: each SSL run's checkpoint
gives a linear-probe classifier and an ONNX / TorchScript export (parity-checked against PyTorch by export)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from innerssl.outputs import export
from innerssl.outputs.checkpoints import encoder_spec_of, load_checkpoint, ssl_checkpoint_encoder
from innerssl.runner import main
from tests.conftest import SHARED_DATA, SSL_ONLY_FLAGS, tiny_demo_flags

VIT = "timm:vit_tiny_patch16_224"
OPTIONS = "img_size=32,patch_size=8,depth=2"
METHODS = {
    "BYOL": ([], OPTIONS),
    # Six local crops of 14 px (0.43 x 32): the ViT interpolates its position embedding and pads to whole patches.
    "DINO": (
        ["--dino_output_dim=64", "--dino_num_local_crops=6"],
        f"{OPTIONS},dynamic_img_size=true,dynamic_img_pad=true",
    ),
    "MAE": (["--mae_decoder_dim=32", "--mae_decoder_depth=1", "--mae_decoder_num_heads=2"], OPTIONS),
}
FORMATS = ["torchscript", "onnx"] if all(importlib.util.find_spec(n) for n in export.ONNX_PACKAGES) else ["torchscript"]
QUICK = {"knn_every_n_epochs": 0, "linear_head_fit_at_validation": "false", "num_epochs": 1}
MONITOR_FLAGS = ("knn_every_n_epochs", "linear_head_fit_at_validation")


def without_method_flags(flags: list[str], method: str) -> list[str]:
    """MAE has no projection head; a classifier has no SSL method and no SSL monitors."""
    drop: tuple[str, ...] = ()
    if method == "MAE":
        drop = ("projection_hidden_dim", "projection_dim")
    if method == "classifier":
        drop = (*SSL_ONLY_FLAGS, *MONITOR_FLAGS)
    return [flag for flag in flags if flag[2:].split("=")[0] not in drop]


def check_run_classifier_and_export(
    ssl_run: Path, options: str, classifier_argv: list[str], classifier_run: Path, tmp_path: Path
) -> None:
    last = ssl_run / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    spec = encoder_spec_of(checkpoint["innerssl"])
    assert spec.name == VIT and spec.options["patch_size"] == 8 and checkpoint["global_step"] > 0
    assert main([*classifier_argv, f"--local_weights_path={last}", f"--encoder_options={options}"]) == 0
    classifier = load_checkpoint(classifier_run / "checkpoints" / "last.ckpt")
    _, encoder = ssl_checkpoint_encoder(last)
    for name, tensor in encoder.items():  # the linear probe's encoder is the SSL run's downstream ViT, bit for bit
        assert torch.equal(classifier["state_dict"][f"encoder.{name}"], tensor), name
    folder = export.export_run(last, FORMATS, 32, tmp_path / "export")
    metadata = json.loads((folder / "model.json").read_text())
    assert metadata["encoder_spec"]["options"] == spec.options
    assert set(metadata["parity_check"]["max_abs_difference"]) == set(FORMATS)
    assert all((folder / export.MODEL_FILES[name]).is_file() for name in FORMATS)


@pytest.mark.parametrize("method", list(METHODS))
def test_a_vit_pretrains_on_the_demo_and_gives_a_classifier_and_an_export(method, tmp_path):
    extra, options = METHODS[method]
    flags = without_method_flags(tiny_demo_flags(tmp_path, ssl_encoder=VIT, **QUICK), method)
    model = "DemoMAE" if method == "MAE" else "DemoBYOL"
    argv = [f"--model={model}", f"--ssl_training_type={method}", *flags, *extra, f"--encoder_options={options}"]
    assert main(argv) == 0
    classifier_flags = without_method_flags(tiny_demo_flags(tmp_path, ssl_encoder=VIT, num_epochs=1), "classifier")
    check_run_classifier_and_export(
        tmp_path / "outputs" / model / "test",
        options,
        ["--model=DemoClassifier", *classifier_flags],
        tmp_path / "outputs" / "DemoClassifier" / "test",
        tmp_path,
    )


@pytest.mark.parametrize("method", list(METHODS))
def test_a_vit_pretrains_on_the_nih_sample_and_gives_a_classifier_and_an_export(method, tmp_path):
    nih = SHARED_DATA / "nih-sample"
    if not nih.is_dir():
        pytest.skip(f"shared test data not found at {nih} (it lies beside the checkout in CI)")
    extra, options = METHODS[method]
    common = {
        "local_dataset": nih,
        "image_size": 32,
        "ssl_encoder": VIT,
        "ssl_training_batch_size": 16,
        "linear_head_batch_size": 16,
        "projection_hidden_dim": 32,
        "projection_dim": 16,
        "warmup_epochs": 0,
        "num_workers": 0,
        "max_num_gpus": 0,
        "run_name": "test",
        "output_dir": tmp_path / "outputs",
        "dataset_cache_dir": tmp_path / "cache",
        **QUICK,
    }
    flags = without_method_flags([f"--{name}={value}" for name, value in common.items()], method)
    argv = ["--model=NIH_BYOL", f"--ssl_training_type={method}", *flags, *extra, f"--encoder_options={options}"]
    assert main(argv) == 0
    classifier = [
        "--model=CXRImageClassifier",
        "--linear_head_dataset_name=NIHBinary",
        "--label_names=Pneumonia",
        "--use_balanced_binary_loss_for_classifier=false",
        *without_method_flags(flags, "classifier"),
    ]
    check_run_classifier_and_export(
        tmp_path / "outputs" / "NIH_BYOL" / "test",
        options,
        classifier,
        tmp_path / "outputs" / "CXRImageClassifier" / "test",
        tmp_path,
    )
