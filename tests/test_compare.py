"""The label-fraction comparison end to end on tiny demo data: SSL checkpoint -> 4 linear probes and 4 kNN runs ->
table and plot; ImageNet-style baseline weights from a local file and extra SSL checkpoints; resume."""

import pandas as pd
import pytest
import torch
from torchvision import models

from innerssl import compare
from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.errors import UserError
from innerssl.networks import torchvision_encoders
from innerssl.outputs.checkpoints import load_checkpoint
from innerssl.registry import find_model
from innerssl.runner import main
from tests.conftest import tiny_classifier_flags, tiny_demo_flags


def classifier_container(tmp_path, **overrides) -> SSLClassifierContainer:
    container = find_model("DemoClassifier", [])()
    container.apply_flags(dict(item[2:].split("=", 1) for item in tiny_classifier_flags(tmp_path, **overrides)))
    return container


@pytest.fixture(scope="module")
def ssl_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ssl")
    assert main(["--model=DemoBYOL", *tiny_demo_flags(tmp_path, num_epochs=1)]) == 0
    return tmp_path / "outputs" / "DemoBYOL" / "test" / "checkpoints" / "last.ckpt"


def test_comparison_writes_table_plot_and_child_runs(ssl_checkpoint, tmp_path, caplog):
    flags = tiny_classifier_flags(tmp_path, num_epochs=1)
    argv = [
        "--model=DemoClassifier",
        "--compare_with_random_init",
        "--label_fractions=0.25,1.0",
        "--compare_freeze_modes=frozen,knn",
        f"--local_weights_path={ssl_checkpoint}",
        *flags,
    ]
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    folder = tmp_path / "outputs" / "DemoClassifier" / "test"
    assert "4/8: frozen, fraction 1, pretrained, seed 42" in caplog.text
    assert "8/8: knn, fraction 1, pretrained, seed 42" in caplog.text

    table = pd.read_csv(folder / "comparison.csv")
    assert len(table) == 8
    assert set(table["init"]) == {"random", "pretrained"} and set(table["label_fraction"]) == {0.25, 1.0}
    assert table["auroc"].between(0, 1).all() and table["accuracy"].between(0, 1).all()
    small = table.loc[table["label_fraction"] == 0.25, "num_train_images"]
    full = table.loc[table["label_fraction"] == 1.0, "num_train_images"]
    assert (small < full.max()).all() and full.nunique() == 1
    # How each head was fitted and the steps it took: the probe's L-BFGS iterations and L2 choice; kNN trains none.
    probes, knn = table[table["mode"] == "frozen"], table[table["mode"] == "knn"]
    assert set(probes["head"]) == {"lbfgs"} and set(knn["head"]) == {"knn"}
    assert (probes["steps"] >= 1).all() and (knn["steps"] == 0).all()
    assert probes["l2"].isin(SSLClassifierContainer.param["linear_probe_l2_grid"].default).all()
    assert knn["l2"].isna().all() and table["val_auroc"].between(0, 1).all()

    markdown = (folder / "comparison.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| frozen |")]
    assert len(rows) == 2 and len([line for line in markdown.splitlines() if line.startswith("| knn |")]) == 2
    steps_cell = rows[0].split("|")[-2].strip()
    first = probes[(probes["label_fraction"] == 0.25)].set_index("init")["steps"]
    assert steps_cell == f"{first['random']:.0f} / {first['pretrained']:.0f}"
    header = next(line for line in markdown.splitlines() if line.startswith("| mode |"))
    for column in (
        "label fraction",
        "training images",
        "random-init AUROC",
        "random-init AUPRC",
        "random-init accuracy",
        "pretrained AUROC",
        "pretrained AUPRC",
        "pretrained accuracy",
        "AUROC difference",
        "AUROC relative improvement (%)",
        "steps random / pretrained",
    ):
        assert column in header, column
    assert "## Settings" in markdown and "L-BFGS" in markdown and "nothing trained" in markdown
    assert (folder / "comparison.png").stat().st_size > 0

    for run_folder in table["run_folder"]:
        child = folder / run_folder.split("/")[-1]
        assert child.parent == folder
        assert (child / "test_predictions.csv").is_file(), child
        assert (child / "charts" / "test_roc.png").is_file(), child
    assert {p.name for p in folder.iterdir() if p.is_dir()} == {"finished_runs"} | {
        f"{mode}_frac{fraction}_{init}_seed42"
        for mode in ("frozen", "knn")
        for fraction in ("0.25", "1")
        for init in ("random", "pretrained")
    }


def test_comparison_without_weights_is_a_one_line_error(tmp_path, capsys):
    argv = ["--model=DemoClassifier", "--compare_with_random_init", *tiny_classifier_flags(tmp_path, num_epochs=1)]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "--local_weights_path" in error and "\n" not in error
    assert not (tmp_path / "outputs").exists()


def test_a_killed_comparison_resumes_after_its_last_finished_run(ssl_checkpoint, tmp_path, caplog):
    argv = [
        "--model=DemoClassifier",
        "--compare_with_random_init",
        "--label_fractions=1.0",
        f"--local_weights_path={ssl_checkpoint}",
        *tiny_classifier_flags(tmp_path, num_epochs=1),
    ]
    assert main(argv) == 0
    folder = tmp_path / "outputs" / "DemoClassifier" / "test"
    before = pd.read_csv(folder / "comparison.csv")
    first_checkpoint = folder / "frozen_frac1_random_seed42" / "checkpoints" / "last.ckpt"
    first_written = first_checkpoint.stat().st_mtime_ns
    # What a kill during the second child leaves: no table, no row for that child.
    (folder / "comparison.csv").unlink()
    (folder / "finished_runs" / "frozen_frac1_pretrained_seed42.json").unlink()

    assert main(argv) == 2  # refuses to start over an unfinished comparison without --resume
    with caplog.at_level("INFO"):
        assert main([*argv, "--resume"]) == 0
    assert "Comparison run 1/2 (frozen_frac1_random_seed42) finished before" in caplog.text
    assert "Comparison run 2/2: frozen, fraction 1, pretrained" in caplog.text
    assert first_checkpoint.stat().st_mtime_ns == first_written  # the finished child was not trained again
    after = pd.read_csv(folder / "comparison.csv")
    pd.testing.assert_frame_equal(after[["mode", "init", "auroc"]], before[["mode", "init", "auroc"]], atol=1e-6)


def imagenet_style_weights(path):
    """A resnet18 state dict with the keys and RGB first layer torchvision publishes (seeded, not downloaded)."""
    torch.manual_seed(7)
    published = models.resnet18(weights=None).state_dict()
    torch.save(published, path)
    return published


def test_comparison_with_imagenet_baseline_and_an_extra_checkpoint(ssl_checkpoint, tmp_path, monkeypatch, caplog):
    weights = tmp_path / "imagenet_resnet18.pth"
    published = imagenet_style_weights(weights)
    figures = []
    monkeypatch.setattr(compare.plt, "close", figures.append)  # keep the charts' figures to read the lines
    argv = [
        "--model=DemoClassifier",
        "--compare_with_random_init",
        "--compare_baselines=random,imagenet",
        f"--compare_imagenet_weights={weights}",
        f"--compare_extra_checkpoints=ssl_again={ssl_checkpoint}",
        "--label_fractions=1.0",
        f"--local_weights_path={ssl_checkpoint}",
        *tiny_classifier_flags(tmp_path, num_epochs=1),
    ]
    with caplog.at_level("INFO"):
        assert main(argv) == 0
    folder = tmp_path / "outputs" / "DemoClassifier" / "test"
    table = pd.read_csv(folder / "comparison.csv")
    assert table["init"].tolist() == ["random", "imagenet", "pretrained", "ssl_again"]
    assert table["auroc"].between(0, 1).all()
    assert table.set_index("init")["weights"].to_dict() == {
        "random": "none",
        "imagenet": str(weights),
        "pretrained": str(ssl_checkpoint),
        "ssl_again": str(ssl_checkpoint),
    }

    # The imagenet child's (frozen) encoder is the file's weights, its first layer summed over RGB for one channel.
    imagenet = folder / "frozen_frac1_imagenet_seed42"
    state = load_checkpoint(imagenet / "checkpoints" / "best.ckpt")["state_dict"]
    conv1 = published["conv1.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(state["encoder.network.conv1.weight"], conv1)
    torch.testing.assert_close(state["encoder.network.layer4.1.conv2.weight"], published["layer4.1.conv2.weight"])
    assert f"starts from --encoder_weights={weights}" in (imagenet / "log.txt").read_text()
    random = load_checkpoint(folder / "frozen_frac1_random_seed42" / "checkpoints" / "best.ckpt")["state_dict"]
    assert not torch.allclose(random["encoder.network.conv1.weight"], conv1)
    again = load_checkpoint(folder / "frozen_frac1_ssl_again_seed42" / "checkpoints" / "best.ckpt")["state_dict"]
    pretrained = load_checkpoint(folder / "frozen_frac1_pretrained_seed42" / "checkpoints" / "best.ckpt")["state_dict"]
    torch.testing.assert_close(again["encoder.network.conv1.weight"], pretrained["encoder.network.conv1.weight"])

    lines = (folder / "comparison.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| mode |"))
    for column in (
        "random-init AUROC",
        "imagenet-init AUROC",
        "pretrained AUROC",
        "ssl_again AUROC",
        "AUROC difference pretrained vs random-init",
        "AUROC difference pretrained vs imagenet-init",
        "AUROC difference ssl_again vs imagenet-init",
        "AUROC relative improvement (%) pretrained vs imagenet-init",
        "steps random / imagenet / pretrained / ssl_again",
    ):
        assert column in header, column
    (row,) = [line for line in lines if line.startswith("| frozen |")]
    cells = dict(zip(header.split("|"), row.split("|"), strict=True))
    aurocs = table.set_index("init")["auroc"]
    difference = cells[" AUROC difference pretrained vs imagenet-init "].strip()
    assert difference == f"{aurocs['pretrained'] - aurocs['imagenet']:+.3f}"
    assert cells[" imagenet-init AUROC "].strip() == f"{aurocs['imagenet']:.3f}"
    assert f"imagenet-init: `--compare_imagenet_weights={weights}`" in "\n".join(lines)

    (figure,) = [f for f in figures if f.axes and f.axes[0].get_title() == "Test AUROC vs label fraction"]
    labels = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert labels == ["random-init, frozen", "imagenet-init, frozen", "pretrained, frozen", "ssl_again, frozen"]


def test_bad_imagenet_baseline_weights_are_one_line_errors_before_any_run(
    ssl_checkpoint, tmp_path, capsys, monkeypatch
):
    junk = tmp_path / "junk.pth"
    junk.write_text("not weights")
    wrong_network = tmp_path / "densenet.pth"
    torch.save({"features.conv0.weight": torch.zeros(64, 3, 7, 7)}, wrong_network)

    real_network = torchvision_encoders.torchvision_network

    def offline(name, pretrained=False):
        if pretrained:  # what torchvision's download raises without a network
            raise ConnectionError("no network")
        return real_network(name)

    monkeypatch.setattr(torchvision_encoders, "torchvision_network", offline)
    cases = [
        (junk, "is not a readable state dict"),
        (wrong_network, "does not fit this encoder"),
        (tmp_path / "absent.pth", "is not a file"),
        ("imagenet", "could not download"),
    ]
    for weights, message in cases:
        argv = [
            "--model=DemoClassifier",
            "--compare_with_random_init",
            "--compare_baselines=random,imagenet",
            f"--compare_imagenet_weights={weights}",
            f"--local_weights_path={ssl_checkpoint}",
            *tiny_classifier_flags(tmp_path, num_epochs=1),
        ]
        assert main(argv) == 2, weights
        error = capsys.readouterr().err.strip()
        assert message in error and "--compare_imagenet_weights" in error and "\n" not in error, error
        assert "--encoder_weights" not in error, error
    assert "--compare_imagenet_weights=<file>" in error  # offline: how to pass the weights instead
    assert not (tmp_path / "outputs").exists()


def test_comparison_flags_are_checked(tmp_path):
    def checked(**flags):
        container = classifier_container(tmp_path, compare_with_random_init="true", **flags)
        container.validate(check_this_machine=False)

    checked(
        local_weights_path="ssl.ckpt", compare_baselines="imagenet", compare_extra_checkpoints="from_imagenet=a.ckpt"
    )
    for flags, message in (
        ({"compare_baselines": "random,supervised"}, "Allowed values: random, imagenet"),
        ({"compare_baselines": ""}, "nothing to compare"),
        ({"compare_extra_checkpoints": "b.ckpt"}, "is not name=path"),
        ({"compare_extra_checkpoints": "random=b.ckpt"}, "none of random, imagenet, pretrained"),
        ({"compare_extra_checkpoints": "a=1.ckpt,a=2.ckpt"}, "names 'a' twice"),
        ({"compare_imagenet_weights": "none"}, "use --compare_baselines=random"),
        ({"encoder_weights": "imagenet"}, "--compare_baselines=random,imagenet"),
    ):
        with pytest.raises(UserError, match=message) as error:
            checked(local_weights_path="ssl.ckpt", **flags)
        assert "\n" not in str(error.value)
