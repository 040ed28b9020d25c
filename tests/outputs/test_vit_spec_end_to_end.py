"""A timm ViT with construction options end to end: SSL run -> classifiers (linear probe, finetuned) from its
last.ckpt -> ONNX and TorchScript export, every step rebuilding the encoder from the checkpoint's encoder spec."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from innerssl.eval.classifier import SSLClassifier
from innerssl.networks import EncoderSpec, create_encoder
from innerssl.outputs import export
from innerssl.outputs.checkpoints import encoder_spec_of, load_checkpoint, ssl_checkpoint_encoder
from innerssl.runner import main
from tests.conftest import tiny_classifier_flags, tiny_demo_flags

VIT = "timm:vit_tiny_patch16_224"
OPTIONS = "img_size=32,patch_size=8,depth=2"  # depth: 2 of ViT-Tiny's 12 blocks, for the test's time
SPEC = EncoderSpec(VIT, 1, 2, {"img_size": 32, "patch_size": 8, "depth": 2})
IMAGE_SIZE = 32
HAS_ONNXRUNTIME = all(importlib.util.find_spec(name) for name in export.ONNX_PACKAGES)
FORMATS = ["torchscript", "onnx"] if HAS_ONNXRUNTIME else ["torchscript"]


def vit_flags(tmp_path, cache, classifier: bool = False, **overrides) -> list[str]:
    make = tiny_classifier_flags if classifier else tiny_demo_flags
    flags = make(tmp_path, num_epochs=1, dataset_cache_dir=cache, ssl_encoder=VIT, **overrides)
    return [*flags, f"--encoder_options={OPTIONS}"]


@pytest.fixture(scope="module")
def vit_runs(tmp_path_factory):
    """The SSL run, and its frozen (linear probe) and finetuned classifiers, all on one demo cache."""
    root = tmp_path_factory.mktemp("vit")
    cache = root / "cache"
    # No kNN monitor and no converged fit at validation: only the checkpoint matters here.
    ssl_extra = {"knn_every_n_epochs": 0, "linear_head_fit_at_validation": "false"}
    assert main(["--model=DemoSimCLR", *vit_flags(root / "ssl", cache, **ssl_extra)]) == 0
    last = root / "ssl" / "outputs" / "DemoSimCLR" / "test" / "checkpoints" / "last.ckpt"
    runs = {"ssl": last}
    for name, extra in (("frozen", {}), ("finetuned", {"freeze_encoder": "false", "classifier_max_steps": 2})):
        flags = vit_flags(root / name, cache, classifier=True, local_weights_path=last, **extra)
        assert main(["--model=DemoClassifier", *flags]) == 0
        runs[name] = root / name / "outputs" / "DemoClassifier" / "test" / "checkpoints" / "best.ckpt"
    return runs


def encoder_weights(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def test_classifiers_rebuild_the_vit_from_the_ssl_checkpoint_spec(vit_runs):
    recorded, ssl_encoder = ssl_checkpoint_encoder(vit_runs["ssl"])
    assert recorded == SPEC
    for mode in ("frozen", "finetuned"):
        checkpoint = load_checkpoint(vit_runs[mode])
        assert encoder_spec_of(checkpoint["innerssl"]) == SPEC, mode
        assert EncoderSpec.from_dict(checkpoint["hyper_parameters"]["encoder_spec"]) == SPEC, mode
        state = encoder_weights(checkpoint["state_dict"], "encoder.")
        assert state["model.pos_embed"].shape == (1, 1 + (32 // 8) ** 2, 192)  # the options' 4 x 4 patch grid
        assert {key.split(".")[2] for key in state if key.startswith("model.blocks.")} == {"0", "1"}
        changed = [key for key in ssl_encoder if not torch.equal(state[key], ssl_encoder[key])]
        if mode == "frozen":
            assert changed == []  # the linear probe's encoder is the SSL encoder, bit for bit
        else:
            assert "model.patch_embed.proj.weight" in changed  # finetuning trained the encoder from it
        module = SSLClassifier(**checkpoint["hyper_parameters"])  # rebuilt from the checkpoint alone
        module.load_state_dict(checkpoint["state_dict"])
        assert module.encoder.spec == SPEC


def test_onnx_and_torchscript_exports_of_the_vit_match_the_pytorch_encoder(vit_runs, tmp_path):
    folder = export.export_run(vit_runs["ssl"], FORMATS, IMAGE_SIZE, tmp_path / "encoder")
    metadata = json.loads((folder / "model.json").read_text())
    assert metadata["encoder"] == VIT and metadata["encoder_spec"]["options"] == SPEC.options
    assert OPTIONS in metadata["encoder_description"] and OPTIONS in metadata["output"]["meaning"]
    assert metadata["output"]["shape"] == ["batch", 192]

    recorded, state = ssl_checkpoint_encoder(vit_runs["ssl"])
    encoder = create_encoder(recorded)
    encoder.load_state_dict(state)
    encoder.eval()
    batch = torch.rand(5, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = encoder(batch)
    torch.testing.assert_close(export.run_torchscript(folder / "model.pt", batch), expected, atol=1e-4, rtol=1e-4)
    if HAS_ONNXRUNTIME:
        torch.testing.assert_close(export.run_onnx(folder / "model.onnx", batch), expected, atol=1e-4, rtol=1e-4)

    # The finetuned classifier exports too (TorchScript: ONNX of the same ViT is checked above).
    folder = export.export_run(vit_runs["finetuned"], ["torchscript"], IMAGE_SIZE, tmp_path / "classifier")
    metadata = json.loads((folder / "model.json").read_text())
    assert metadata["kind"] == "classifier" and metadata["encoder_spec"]["options"]["patch_size"] == 8


def test_a_classifier_with_other_encoder_options_is_a_one_line_error(vit_runs, tmp_path, capsys):
    flags = tiny_classifier_flags(tmp_path, ssl_encoder=VIT, local_weights_path=vit_runs["ssl"])
    for options in ("--encoder_options=img_size=32,patch_size=4,depth=2", "--encoder_options="):
        assert main(["--model=DemoClassifier", *flags, options]) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and f"--ssl_encoder={VIT} --in_channels=1 --encoder_options={OPTIONS}" in error
    assert not (tmp_path / "outputs").exists()
