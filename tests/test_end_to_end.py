"""SSL run -> checkpoint -> classifier, resume, and checkpoint errors, on tiny demo data (CPU, seconds)."""

import pandas as pd
import pytest
import torch
import yaml

from innerssl.errors import UserError
from innerssl.outputs.checkpoints import encoder_state_from_ssl_checkpoint, load_checkpoint
from innerssl.runner import main
from tests.conftest import tiny_classifier_flags, tiny_demo_flags


@pytest.fixture(scope="module")
def ssl_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ssl")
    assert main(["--model=DemoBYOL", *tiny_demo_flags(tmp_path)]) == 0
    return tmp_path / "outputs" / "DemoBYOL" / "test"


def test_ssl_run_writes_the_documented_outputs(ssl_run):
    for name in ("config.yaml", "metrics.csv", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "log.txt"):
        assert (ssl_run / name).is_file(), name
    config = yaml.safe_load((ssl_run / "config.yaml").read_text())
    assert config["model"] == "DemoBYOL" and config["num_epochs"] == 2 and config["ssl_encoder"] == "resnet18"
    metrics = pd.read_csv(ssl_run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    for column in (
        "ssl/train_loss",
        "ssl/val_loss",
        "linear_head/val_auroc",
        "linear_head/train_auprc",
        "knn/val_auroc",
    ):
        assert metrics[column].notna().all(), column
    charts = {p.name for p in (ssl_run / "charts").glob("*.png")}
    assert {"ssl_loss.png", "linear_head_auroc.png", "linear_head_accuracy.png"} <= charts
    assert any((ssl_run / "tensorboard").glob("events.out.tfevents.*"))
    checkpoint = load_checkpoint(ssl_run / "checkpoints" / "last.ckpt")
    assert checkpoint["innerssl"]["method"] == "BYOL"
    assert checkpoint["global_step"] == metrics["step"].iloc[-1] > 0


def test_classifier_from_ssl_checkpoint_keeps_frozen_encoder_bit_identical(ssl_run, tmp_path):
    weights = ssl_run / "checkpoints" / "last.ckpt"
    flags = tiny_classifier_flags(tmp_path, local_weights_path=weights, freeze_encoder="true")
    assert main(["--model=DemoClassifier", *flags]) == 0
    run = tmp_path / "outputs" / "DemoClassifier" / "test"
    ssl_encoder = encoder_state_from_ssl_checkpoint(weights, "resnet18", 1)
    classifier = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert classifier["innerssl"]["kind"] == "classifier"
    classifier_encoder = {
        k[len("encoder.") :]: v for k, v in classifier["state_dict"].items() if k.startswith("encoder.")
    }
    assert classifier_encoder.keys() == ssl_encoder.keys()
    for name, tensor in ssl_encoder.items():
        assert torch.equal(tensor, classifier_encoder[name]), name  # weights and BatchNorm buffers alike
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["classifier/val_auroc"].between(0, 1).all()


def test_classifier_rejects_wrong_checkpoints(ssl_run, tmp_path, capsys):
    weights = ssl_run / "checkpoints" / "last.ckpt"
    cases = [
        (
            tiny_classifier_flags(tmp_path, local_weights_path=weights, ssl_encoder="resnet50"),
            "holds a resnet18 with 1 input channel(s), 2D encoder, but this run asks for resnet50",
        ),
    ]
    not_a_checkpoint = tmp_path / "notes.ckpt"
    not_a_checkpoint.write_text("hello")
    cases.append(
        (tiny_classifier_flags(tmp_path, local_weights_path=not_a_checkpoint), "is not a readable PyTorch checkpoint")
    )
    for flags, expected in cases:
        assert main(["--model=DemoClassifier", *flags]) == 2
        error = capsys.readouterr().err.strip()
        assert expected in error and "\n" not in error


def test_classifier_checkpoint_is_not_an_ssl_checkpoint(ssl_run, tmp_path):
    flags = tiny_classifier_flags(tmp_path, num_epochs=1)
    assert main(["--model=DemoClassifier", *flags]) == 0
    classifier_ckpt = tmp_path / "outputs" / "DemoClassifier" / "test" / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="is a classifier checkpoint, not an SSL checkpoint"):
        encoder_state_from_ssl_checkpoint(classifier_ckpt, "resnet18", 1)


def test_pickled_code_in_a_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_checkpoint(path)


def test_resume_continues_from_the_saved_epoch(tmp_path):
    first = tiny_demo_flags(tmp_path, num_epochs=1, ssl_training_type="SimCLR")
    assert main(["--model=DemoSimCLR", *first]) == 0
    run = tmp_path / "outputs" / "DemoSimCLR" / "test"
    saved = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert saved["global_step"] > 0
    again = tiny_demo_flags(tmp_path, num_epochs=2, ssl_training_type="SimCLR", resume="true")
    assert main(["--model=DemoSimCLR", *again]) == 0
    resumed = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert resumed["global_step"] == 2 * saved["global_step"]
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["epoch"]) == [0, 1]
    head_state = resumed["callbacks"]
    assert any("OnlineLinearHead" in key and value.get("optimizer") for key, value in head_state.items())


def test_new_run_refuses_to_overwrite_and_resume_needs_a_run(tmp_path, capsys):
    assert main(["--model=DemoSimCLR", *tiny_demo_flags(tmp_path, resume="true")]) == 2
    assert "--resume" in capsys.readouterr().err
