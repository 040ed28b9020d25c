"""The label-fraction comparison end to end on tiny demo data: SSL checkpoint -> 4 linear probes and 4 kNN runs ->
table and plot."""

import pandas as pd
import pytest

from innerssl.containers.classifier import SSLClassifierContainer
from innerssl.runner import main
from tests.conftest import tiny_demo_flags


@pytest.fixture(scope="module")
def ssl_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("ssl")
    assert main(["--model=DemoBYOL", *tiny_demo_flags(tmp_path, num_epochs=1)]) == 0
    return tmp_path / "outputs" / "DemoBYOL" / "test" / "checkpoints" / "last.ckpt"


def test_comparison_writes_table_plot_and_child_runs(ssl_checkpoint, tmp_path, caplog):
    flags = tiny_demo_flags(tmp_path, num_epochs=1)
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
    argv = ["--model=DemoClassifier", "--compare_with_random_init", *tiny_demo_flags(tmp_path, num_epochs=1)]
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
        *tiny_demo_flags(tmp_path, num_epochs=1),
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
