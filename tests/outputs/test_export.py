"""Export of tiny real SSL and classifier runs to TorchScript and ONNX, checked against PyTorch."""

import importlib.util
import json

import pytest
import torch

import innerssl
from innerssl.encoders import create_encoder
from innerssl.errors import UserError
from innerssl.eval.classifier import SSLClassifier
from innerssl.outputs import export
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint, load_checkpoint
from innerssl.runner import main
from tests.conftest import tiny_classifier_flags, tiny_demo_flags

HAS_ONNXRUNTIME = all(importlib.util.find_spec(name) for name in export.ONNX_PACKAGES)
FORMATS = ["torchscript", "onnx"] if HAS_ONNXRUNTIME else ["torchscript"]
IMAGE_SIZE = 32  # tiny_demo_flags' demo_image_size


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("export")
    assert main(["--model=DemoBYOL", *tiny_demo_flags(tmp_path, num_epochs=1)]) == 0
    ssl = tmp_path / "outputs" / "DemoBYOL" / "test"
    weights = ssl / "checkpoints" / "last.ckpt"
    assert (
        main(["--model=DemoClassifier", *tiny_classifier_flags(tmp_path, num_epochs=1, local_weights_path=weights)])
        == 0
    )
    return ssl, tmp_path / "outputs" / "DemoClassifier" / "test"


def images(batch_size, seed=1):
    return torch.rand(batch_size, 1, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def run_onnx(path, batch):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"images": batch.numpy()})[0])


def check_metadata(metadata, kind, output_name, output_size, checkpoint):
    assert metadata["kind"] == kind
    assert metadata["files"] == {name: export.MODEL_FILES[name] for name in FORMATS}
    assert metadata["input"]["shape"] == ["batch", 1, IMAGE_SIZE, IMAGE_SIZE]
    assert metadata["input"]["channels"] == 1 and metadata["input"]["value_range"] == [0.0, 1.0]
    assert "no mean/std normalisation" in metadata["input"]["normalisation"]
    assert metadata["input"]["preprocessing"]["source"].endswith("demo_linear_head_augmentations.yaml")
    assert metadata["output"]["name"] == output_name and metadata["output"]["shape"] == ["batch", output_size]
    assert metadata["source_checkpoint"] == str(checkpoint.resolve())
    assert metadata["innerssl_version"] == innerssl.__version__
    assert metadata["onnx_opset"] == (export.ONNX_OPSET if HAS_ONNXRUNTIME else None)
    parity = metadata["parity_check"]
    assert parity["atol"] == parity["rtol"] == 1e-4
    assert set(parity["max_abs_difference"]) == set(FORMATS)
    assert all(0 <= difference <= 1e-4 for difference in parity["max_abs_difference"].values())


def test_ssl_encoder_export(runs, tmp_path):
    checkpoint = runs[0] / "checkpoints" / "last.ckpt"
    folder = export.export_run(checkpoint, FORMATS, IMAGE_SIZE, tmp_path / "deployment")
    assert folder == tmp_path / "deployment"
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.json", *(export.MODEL_FILES[f] for f in FORMATS)])
    metadata = json.loads((folder / "model.json").read_text())
    check_metadata(metadata, "encoder", "embeddings", 512, checkpoint)
    assert metadata["ssl_method"] == "BYOL" and metadata["encoder"] == "resnet18" and metadata["task"] is None
    # Independent reference: the downstream (target) encoder as the classifier would load it.
    encoder = create_encoder("resnet18", 1)
    encoder.load_state_dict(encoder_state_from_ssl_checkpoint(checkpoint, "resnet18", 1))
    encoder.eval()
    for batch in (images(1), images(5)):
        with torch.no_grad():
            expected = encoder(batch)
        scripted = torch.jit.load(str(folder / "model.pt"))
        torch.testing.assert_close(scripted(batch), expected, atol=1e-4, rtol=1e-4)
        if HAS_ONNXRUNTIME:
            torch.testing.assert_close(run_onnx(folder / "model.onnx", batch), expected, atol=1e-4, rtol=1e-4)


def test_classifier_export_from_the_command_line(runs, capsys):
    classifier_run = runs[1]
    checkpoint = classifier_run / "checkpoints" / "best.ckpt"
    # No --image_size: the demo run's image size; no --output_folder: <run>/deployment_model.
    assert export.main([f"--checkpoint={checkpoint}", f"--formats={','.join(FORMATS)}"]) == 0
    folder = classifier_run / "deployment_model"
    assert f"Exported to {folder}" in capsys.readouterr().out
    metadata = json.loads((folder / "model.json").read_text())
    check_metadata(metadata, "classifier", "probabilities", 1, checkpoint)
    assert metadata["task"] == "binary" and metadata["class_names"] == ["No opacity", "Opacity"]
    assert "'Opacity'" in metadata["output"]["meaning"]
    stored = load_checkpoint(checkpoint)
    module = SSLClassifier(**stored["hyper_parameters"])
    module.load_state_dict(stored["state_dict"])
    module.eval()
    batch = images(4, seed=2)
    with torch.no_grad():
        expected = module(batch).sigmoid()
    scripted = torch.jit.load(str(folder / "model.pt"))
    torch.testing.assert_close(scripted(batch), expected, atol=1e-4, rtol=1e-4)
    assert ((expected >= 0) & (expected <= 1)).all()
    if HAS_ONNXRUNTIME:
        torch.testing.assert_close(run_onnx(folder / "model.onnx", batch), expected, atol=1e-4, rtol=1e-4)


def test_parity_mismatch_raises_and_leaves_nothing(runs, tmp_path, monkeypatch):
    checkpoint = runs[0] / "checkpoints" / "last.ckpt"
    real = export.RUNNERS["torchscript"]
    monkeypatch.setitem(export.RUNNERS, "torchscript", lambda path, batch: real(path, batch) + 1e-3)
    with pytest.raises(export.ExportParityError, match="differs from the PyTorch model"):
        export.export_run(checkpoint, ["torchscript"], IMAGE_SIZE, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_export_targets_give_one_line_user_errors(runs, tmp_path, monkeypatch, capsys):
    checkpoint = runs[0] / "checkpoints" / "last.ckpt"
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    cases = [
        (checkpoint, ["tflite"], IMAGE_SIZE, None, "Unknown export format 'tflite'"),
        (checkpoint, [], IMAGE_SIZE, None, "No export format"),
        (checkpoint, ["torchscript"], 0, None, "--image_size must be"),
        (tmp_path / "missing.ckpt", ["torchscript"], IMAGE_SIZE, None, "does not exist"),
        (not_a_checkpoint, ["torchscript"], IMAGE_SIZE, None, "not a readable PyTorch checkpoint"),
        (foreign, ["torchscript"], IMAGE_SIZE, None, "not written by innerssl"),
        (checkpoint, ["torchscript"], IMAGE_SIZE, not_a_checkpoint / "sub", "Cannot write the exported model"),
    ]
    for path, formats, size, folder, message in cases:
        with pytest.raises(UserError, match=message) as error:
            export.export_run(path, formats, size, folder)
        assert "\n" not in str(error.value)
    monkeypatch.setattr(export, "ONNX_PACKAGES", ("no_such_onnx_package",))
    with pytest.raises(UserError, match=r"no_such_onnx_package.*\[export\]"):
        export.export_run(checkpoint, ["onnx"], IMAGE_SIZE, tmp_path / "onnx")
    assert export.main([f"--checkpoint={tmp_path / 'missing.ckpt'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "does not exist" in err and "\n" not in err
