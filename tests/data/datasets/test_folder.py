"""ImageFolder: class subfolders, split files, seeded stratified splits and user errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from innerssl.data.datasets.folder import build_image_folder
from innerssl.errors import UserError

IMAGES_PER_CLASS = 10


def make_folder(root: Path, write_image, classes: tuple[str, ...]) -> Path:
    for name in classes:
        for index in range(IMAGES_PER_CLASS):
            suffix = (".png", ".jpg", ".tif")[index % 3]
            write_image(root / name / f"img{index}{suffix}")
    (root / ".hidden").mkdir()
    (root / classes[0] / "notes.txt").write_text("not an image")
    return root


def test_two_classes_are_binary_with_the_second_positive(tmp_path: Path, write_image, make_options, caplog) -> None:
    root = make_folder(tmp_path / "data", write_image, ("pneumonia", "normal"))
    splits = build_image_folder(root, make_options(val_fraction=0.2, test_fraction=0.2))
    assert splits.label_info.task == "binary"
    assert splits.label_info.class_names == ("normal", "pneumonia")
    everything = splits.train.records + splits.val.records + splits.test.records
    assert len(everything) == 2 * IMAGES_PER_CLASS
    assert all(r.label == (1 if r.path.parent.name == "pneumonia" else 0) for r in everything)
    # Stratified: each split holds both classes in equal numbers.
    for dataset, size in ((splits.train, 6), (splits.val, 2), (splits.test, 2)):
        assert sorted(dataset.labels) == [0] * size + [1] * size
    image, label = splits.train[0]
    assert image.shape == (1, 16, 16) and label in (0, 1)
    assert "ImageFolder train: 12 images" in caplog.text


def test_three_classes_are_multiclass(tmp_path: Path, write_image, make_options) -> None:
    root = make_folder(tmp_path / "data", write_image, ("b", "a", "c"))
    splits = build_image_folder(root, make_options())
    assert splits.label_info.task == "multiclass"
    assert splits.label_info.class_names == ("a", "b", "c")
    assert splits.label_info.num_outputs == 3


def test_split_files_are_honoured(tmp_path: Path, write_image, make_options, caplog) -> None:
    root = make_folder(tmp_path / "data", write_image, ("neg", "pos"))
    (root / "train.txt").write_text("neg/img0.png\npos/img0.png\n# a comment\n\npos/img1.jpg\n")
    (root / "val.txt").write_text("neg/img1.jpg\nneg/missing.png\n")
    splits = build_image_folder(root, make_options())
    assert [r.path.relative_to(root).as_posix() for r in splits.train.records] == [
        "neg/img0.png",
        "pos/img0.png",
        "pos/img1.jpg",
    ]
    assert [r.path.relative_to(root).as_posix() for r in splits.val.records] == ["neg/img1.jpg"]
    assert splits.test is None
    assert "1 image file(s) listed in val.txt are missing" in caplog.text

    (root / "test.txt").write_text("pos/img2.tif\n")
    splits = build_image_folder(root, make_options())
    assert [r.path.name for r in splits.test.records] == ["img2.tif"]


def test_user_errors(tmp_path: Path, write_image, make_options) -> None:
    with pytest.raises(UserError, match="ImageFolder dataset needs its folder.*--local_dataset"):
        build_image_folder(None, make_options())
    with pytest.raises(UserError, match="does not exist"):
        build_image_folder(tmp_path / "nowhere", make_options())
    write_image(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(UserError, match="at least 2 class subfolders.*found only only"):
        build_image_folder(tmp_path / "one", make_options())

    root = make_folder(tmp_path / "data", write_image, ("neg", "pos"))
    (root / "train.txt").write_text("neg/img0.png\n")
    with pytest.raises(UserError, match="has train.txt but no val.txt"):
        build_image_folder(root, make_options())
    (root / "val.txt").write_text("neg/img0.png\n")
    with pytest.raises(UserError, match="listed in both train.txt and val.txt"):
        build_image_folder(root, make_options())
