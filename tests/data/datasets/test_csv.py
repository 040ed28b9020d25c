"""CSV dataset: label kinds from the label columns, patient grouping, the split column, user errors."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from innerssl.data.datasets.csv import build_csv
from innerssl.errors import UserError

NUM_IMAGES = 20
IMAGES_PER_PATIENT = 2


@pytest.fixture
def csv_root(tmp_path: Path, write_image) -> Path:
    """20 images of 10 patients with binary, multiclass and multilabel columns, in dataset.csv."""
    root = tmp_path / "data"
    rows = []
    for index in range(NUM_IMAGES):
        relative = f"images/sub/img{index:02d}.png"
        write_image(root / relative)
        rows.append(
            {
                "path": relative,
                "patient_id": f"p{index // IMAGES_PER_PATIENT}",
                "opacity": index % 2,
                "grade": ("mild", "none", "severe")[index % 3],
                "effusion": index % 2,
                "edema": float("nan") if index == 0 else float(index % 4 == 0),
            }
        )
    pd.DataFrame(rows).to_csv(root / "dataset.csv", index=False)
    return root


def all_records(splits: object) -> list:
    parts = (splits.train, splits.val, splits.test)  # type: ignore[attr-defined]
    return [r for d in parts if d is not None for r in d.records]


def test_binary_column_with_patient_groups(csv_root: Path, make_options, caplog) -> None:
    splits = build_csv(csv_root, make_options(label_names=("opacity",), val_fraction=0.2, test_fraction=0.2))
    assert splits.label_info.task == "binary"
    assert splits.label_info.class_names == ("No opacity", "opacity")
    records = all_records(splits)
    assert len(records) == NUM_IMAGES
    assert all(r.label == int(r.path.stem[-2:]) % 2 for r in records)
    patients = [{r.patient_id for r in d.records} for d in (splits.train, splits.val, splits.test)]
    assert [len(p) for p in patients] == [6, 2, 2]
    assert not patients[0] & patients[1] and not patients[0] & patients[2] and not patients[1] & patients[2]
    image, label = splits.train[0]
    assert image.shape == (1, 16, 16) and label in (0, 1)
    assert "CSV train: 12 images" in caplog.text


def test_multiclass_column(csv_root: Path, make_options) -> None:
    splits = build_csv(csv_root, make_options(label_names=("grade",)))
    assert splits.label_info.task == "multiclass"
    assert splits.label_info.class_names == ("mild", "none", "severe")
    assert all(r.label == int(r.path.stem[-2:]) % 3 for r in all_records(splits))


def test_numeric_multiclass_column_drops_blank_rows(csv_root: Path, make_options, caplog) -> None:
    frame = pd.read_csv(csv_root / "dataset.csv")
    frame["stage"] = [float("nan")] + [index % 3 + 1 for index in range(1, NUM_IMAGES)]
    frame.to_csv(csv_root / "dataset.csv", index=False)
    splits = build_csv(csv_root, make_options(label_names=("stage",)))
    assert splits.label_info.class_names == ("1", "2", "3")
    assert len(all_records(splits)) == NUM_IMAGES - 1
    assert "1 row(s)" in caplog.text


def test_multilabel_columns_keep_blanks_as_nan(csv_root: Path, make_options) -> None:
    splits = build_csv(csv_root, make_options(label_names=("effusion", "edema")))
    assert splits.label_info.task == "multilabel"
    assert splits.label_info.class_names == ("effusion", "edema")
    by_name = {r.path.name: r.label for r in all_records(splits)}
    assert math.isnan(by_name["img00.png"][1])
    assert by_name["img04.png"] == (0.0, 1.0) and by_name["img03.png"] == (1.0, 0.0)
    image, label = splits.train[0]
    assert label.shape == (2,)


def test_unlabeled_without_label_columns(csv_root: Path, make_options) -> None:
    splits = build_csv(csv_root, make_options())
    assert splits.label_info.task == "unlabeled"
    assert {r.label for r in all_records(splits)} == {-1}


def test_split_column_overrides_the_seeded_split(csv_root: Path, make_options, caplog) -> None:
    frame = pd.read_csv(csv_root / "dataset.csv")
    frame["split"] = ["Train"] * 15 + ["val"] * 4 + ["validation"]
    frame.to_csv(csv_root / "dataset.csv", index=False)
    splits = build_csv(csv_root, make_options(label_names=("opacity",)))
    assert len(splits.train) == 15 and len(splits.val) == 5 and splits.test is None
    assert "1 patient(s) have images in more than one split" in caplog.text  # p7 has img14 (train), img15 (val)

    frame.loc[3, "split"] = "holdout"
    frame.to_csv(csv_root / "dataset.csv", index=False)
    with pytest.raises(UserError, match="'holdout'.*train, val or test"):
        build_csv(csv_root, make_options())


def test_other_csv_file_and_stratified_split_without_patients(csv_root: Path, make_options) -> None:
    frame = pd.read_csv(csv_root / "dataset.csv").drop(columns=["patient_id"])
    frame.rename(columns={"path": "file"}).to_csv(csv_root / "labels.csv", index=False)
    options = make_options(label_names=("opacity",), image_column="file", csv_file="labels.csv")
    splits = build_csv(csv_root, options)
    assert sorted(splits.val.labels) == [0, 1] and sorted(splits.test.labels) == [0, 1]


def test_missing_images_are_left_out(csv_root: Path, make_options, caplog) -> None:
    (csv_root / "images" / "sub" / "img05.png").unlink()
    splits = build_csv(csv_root, make_options())
    assert len(all_records(splits)) == NUM_IMAGES - 1
    assert "1 image file(s) listed in" in caplog.text


def test_user_errors(csv_root: Path, tmp_path: Path, make_options) -> None:
    with pytest.raises(UserError, match="CSV dataset needs its folder.*--extra_local_dataset_paths"):
        build_csv(None, make_options(root_parameter="--extra_local_dataset_paths"))
    with pytest.raises(UserError, match="has no dataset.csv"):
        build_csv(tmp_path, make_options())
    with pytest.raises(
        UserError, match=r"lacks the column\(s\) image, finding; its columns are: path, patient_id, opacity"
    ):
        build_csv(csv_root, make_options(image_column="image", label_names=("finding",)))
    with pytest.raises(UserError, match="multilabel column.*grade"):
        build_csv(csv_root, make_options(label_names=("opacity", "grade")))
    (csv_root / "images" / "sub").rename(csv_root / "elsewhere")
    with pytest.raises(UserError, match="holds none of the 20 image files"):
        build_csv(csv_root, make_options())
