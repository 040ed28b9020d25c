"""The chest X-ray configs end to end on real data: SSL on the NIH sample, linear head and classifier on RSNA."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from innerssl.runner import main
from tests.conftest import SHARED_DATA, SSL_ONLY_FLAGS
from tests.rsna_layout import build_rsna_layout

SMALL = [
    "--image_size=32",
    "--ssl_encoder=resnet18",
    "--num_epochs=1",
    "--num_workers=0",
    "--max_num_gpus=0",
    "--ssl_training_batch_size=16",
    "--linear_head_batch_size=8",
    "--projection_hidden_dim=32",
    "--projection_dim=16",
    "--warmup_epochs=0",
    "--run_name=test",
]


NIH_SUBSET = 48


@pytest.fixture(scope="module")
def nih_subset(tmp_path_factory):
    """The first NIH_SUBSET images of the shared NIH sample (linked, same layout) to keep the run short."""
    if not (SHARED_DATA / "nih-sample" / "images").is_dir():
        pytest.skip(f"shared NIH sample not found under {SHARED_DATA}")
    source = SHARED_DATA / "nih-sample"
    root = tmp_path_factory.mktemp("nih")
    (root / "images").mkdir()
    names = sorted(p.name for p in (source / "images").glob("*.png"))[:NIH_SUBSET]
    for name in names:
        (root / "images" / name).symlink_to(source / "images" / name)
    labels = pd.read_csv(source / "Data_Entry_2017.csv")
    labels[labels["Image Index"].isin(names)].to_csv(root / "Data_Entry_2017.csv", index=False)
    return root


@pytest.fixture(scope="module")
def rsna_layout(nih_subset, tmp_path_factory):
    root = tmp_path_factory.mktemp("rsna")
    build_rsna_layout(nih_subset / "images", root, num_images=40, positives=20, image_size=128)
    return root


def test_nih_rsna_byol_then_cxr_classifier(nih_subset, rsna_layout, tmp_path):
    outputs = tmp_path / "outputs"
    flags = [
        f"--local_dataset={nih_subset}",
        f"--extra_local_dataset_paths={rsna_layout}",
        f"--output_dir={outputs}",
        *SMALL,
    ]
    assert main(["--model=NIH_RSNA_BYOL", *flags]) == 0
    run = outputs / "NIH_RSNA_BYOL" / "test"
    metrics = pd.read_csv(run / "metrics.csv")
    assert {"ssl/train_loss", "linear_head/val_auroc", "linear_head/train_loss"} <= set(metrics.columns)
    assert metrics["linear_head/val_auroc"].between(0, 1).all()
    weights = run / "checkpoints" / "last.ckpt"

    classifier_flags = [
        f"--local_dataset={rsna_layout}",
        f"--local_weights_path={weights}",
        f"--output_dir={outputs}",
        *(flag for flag in SMALL if flag[2:].split("=")[0] not in SSL_ONLY_FLAGS),
    ]
    assert main(["--model=CXRImageClassifier", *classifier_flags]) == 0
    classifier_metrics = pd.read_csv(outputs / "CXRImageClassifier" / "test" / "metrics.csv")
    assert classifier_metrics["classifier/val_auroc"].notna().all()


def test_missing_dataset_folder_says_what_to_download(tmp_path, capsys):
    assert main(["--model=NIH_RSNA_BYOL", f"--output_dir={tmp_path}", *SMALL]) == 2
    error = capsys.readouterr().err
    assert "NIH ChestX-ray14" in error and "--local_dataset" in error and "\n" not in error.strip()


def test_run_skips_and_lists_unreadable_images(tmp_path):
    root = tmp_path / "folder"
    rng = np.random.default_rng(0)
    for label in ("normal", "opacity"):
        (root / label).mkdir(parents=True)
        for index in range(12):
            Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(root / label / f"{index}.png")
    broken = root / "opacity" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    flags = [
        f"--local_dataset={root}",
        "--ssl_training_dataset_name=ImageFolder",
        "--linear_head_dataset_name=ImageFolder",
        "--val_fraction=0.2",
        "--test_fraction=0.0",
        f"--output_dir={tmp_path / 'outputs'}",
        "--num_epochs=2",
        *SMALL[:1],
        *SMALL[2:4],
        *SMALL[4:],
    ]
    flags = [f for f in flags if not f.startswith("--num_epochs=1")]
    assert main(["--model=DemoBYOL", *flags]) == 0
    run = tmp_path / "outputs" / "DemoBYOL" / "test"
    listed = (run / "bad_files.txt").read_text()
    assert str(broken) in listed
    assert len(pd.read_csv(run / "metrics.csv")) == 2
