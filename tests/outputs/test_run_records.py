"""What a run leaves for reproducing and looking at it: splits.csv, aug/ previews, and --check_data."""

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from innerssl.augment.config import parse_augmentation_config
from innerssl.data.pipeline import ImageStream
from innerssl.outputs.augmentation_previews import StreamPreview, write_preview
from innerssl.runner import main
from tests.conftest import tiny_demo_flags


def test_an_ssl_run_lists_its_images_and_shows_its_augmentations(tmp_path):
    assert main(["--model=DemoSimCLR", *tiny_demo_flags(tmp_path, num_epochs=1)]) == 0
    run = tmp_path / "outputs" / "DemoSimCLR" / "test"
    splits = pd.read_csv(run / "splits.csv", keep_default_na=False)
    assert set(splits["role"]) == {"ssl", "linear_head"} and set(splits["dataset"]) == {"Demo"}
    for role, rows in splits.groupby("role"):
        assert rows.groupby("split").size().sum() == 96, role  # every generated image, once per role
        assert rows.set_index(["split", "index"]).index.is_unique, role
    labeled = splits[splits["role"] == "linear_head"]
    assert set(labeled["label_name"]) == {"clear", "opacity"} or len(set(labeled["label"])) == 2
    for name in ("ssl", "linear_head"):
        preview = np.asarray(Image.open(run / "aug" / f"{name}.png"))
        assert preview.shape[0] > 200 and preview.shape[1] > 100, name


def write_png(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.arange(24 * 24).reshape(24, 24) * 7 + value) % 256
    Image.fromarray(pixels.astype(np.uint8)).save(path)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    root = tmp_path / "folder"
    for index in range(12):
        write_png(root / "normal" / f"n{index}.png", index)
        write_png(root / "opacity" / f"o{index}.png", 100 + index)
    (root / "opacity" / "o_broken.png").write_bytes(b"\x89PNG not really")
    return root


@pytest.mark.parametrize("decode_cache", ["true", "false"])
def test_check_data_reports_counts_and_unreadable_files_and_trains_nothing(
    image_folder, tmp_path, capsys, caplog, decode_cache
):
    caplog.set_level(logging.INFO)
    flags = tiny_demo_flags(tmp_path, local_dataset=image_folder, decode_cache=decode_cache, val_fraction=0.2)
    argv = ["--model=DemoSimCLR", "--ssl_training_dataset_name=ImageFolder", "--linear_head_dataset_name=ImageFolder"]
    assert main([*argv, *flags, "--check_data"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "outputs" / "DemoSimCLR" / "test"
    assert "Data checked (--check_data, nothing trained)" in out and "1 unreadable image files" in out
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()
    bad = (run / "bad_files.txt").read_text()
    assert "o_broken.png" in bad
    assert "ImageFolder (linear_head) train: 18 images, 0 unreadable (normal=9, opacity=9)" in caplog.text
    assert "ImageFolder (linear_head) val: 5 images, 1 unreadable (normal=2, opacity=3 [1 unreadable])" in caplog.text
    splits = pd.read_csv(run / "splits.csv", keep_default_na=False)
    assert len(splits[splits["role"] == "ssl"]) == 25 and splits["path"].str.endswith(".png").all()
    assert {"normal", "opacity"} == set(splits["label_name"])
    assert (run / "aug" / "ssl.png").is_file() and (run / "aug" / "linear_head.png").is_file()


class Stored(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int):
        return torch.full((1, 20, 20), 40 * index, dtype=torch.uint8), 0


def test_previews_leave_the_training_augmentation_stream_unchanged(tmp_path):
    config = parse_augmentation_config(
        {
            "preprocess": {"resize": 16},
            "augmentation": {"use_gaussian_noise": True, "gaussian_noise": {"std": 0.2, "p_apply": 1.0}},
        },
        "test",
    )
    batch = torch.stack([Stored()[i][0] for i in range(4)])
    streams = [ImageStream(config, 1, augment_on_device=True, views=2) for _ in range(2)]
    for stream in streams:
        stream.reseed(3)
    path = write_preview(StreamPreview("ssl", streams[0], Stored()), tmp_path, torch.device("cpu"))
    assert path is not None and path.is_file()
    with_preview, without = streams[0].to_encoder(batch), streams[1].to_encoder(batch)
    for a, b in zip(with_preview, without):
        assert torch.equal(a, b)
