"""NIH ChestX-ray14 on the real 216-image sample in its original layout, and the other published layouts."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from innerssl.data.datasets.base import read_bad_file_log
from innerssl.data.datasets.nih import FINDINGS, build_nih, build_nih_binary, build_nih_multilabel
from innerssl.errors import UserError
from innerssl.registry import DATASETS

CSV_NAME = "Data_Entry_2017.csv"


def expected_findings(csv: Path) -> pd.DataFrame:
    """Independent reading of the label file: one 0/1 column per finding, indexed by image name."""
    frame = pd.read_csv(csv)
    findings = frame["Finding Labels"].str.get_dummies(sep="|")
    findings.index = frame["Image Index"]
    return findings.reindex(columns=list(FINDINGS), fill_value=0)


def link_images(source: Path, target: Path, names: list[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        (target / name).symlink_to(source / "images" / name)


def patients_of(dataset: object) -> set[str]:
    return {record.patient_id for record in dataset.records}  # type: ignore[attr-defined]


def test_registered() -> None:
    for name in ("NIH", "NIHBinary", "NIHMultiLabel"):
        assert DATASETS.get(name) is not None


def test_binary_counts_match_the_csv(nih_sample: Path, make_options, split_datasets, caplog) -> None:
    splits = build_nih_binary(nih_sample, make_options())
    expected = expected_findings(nih_sample / CSV_NAME)["Pneumonia"]
    datasets = split_datasets(splits)
    labels = {record.path.name: record.label for d in datasets.values() for record in d.records}
    assert len(labels) == len(expected) == sum(len(d) for d in datasets.values())
    assert labels == expected.to_dict()
    assert splits.label_info.class_names == ("No Pneumonia", "Pneumonia")
    assert splits.label_info.task == "binary"
    assert "NIHBinary train:" in caplog.text and "Pneumonia=" in caplog.text


def test_splits_are_patient_disjoint_and_complete(nih_sample: Path, make_options, split_datasets) -> None:
    splits = build_nih(nih_sample, make_options(val_fraction=0.2, test_fraction=0.2, seed=3))
    datasets = split_datasets(splits)
    assert set(datasets) == {"train", "val", "test"}
    patients = [patients_of(d) for d in datasets.values()]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not patients[i] & patients[j]
    names = sorted(record.path.name for d in datasets.values() for record in d.records)
    assert names == sorted(pd.read_csv(nih_sample / CSV_NAME)["Image Index"])
    assert all(len(d) > 0 for d in datasets.values())
    assert splits.label_info.task == "unlabeled"
    assert set(datasets["train"].labels) == {-1}


def test_split_is_seeded(nih_sample: Path, make_options) -> None:
    first = build_nih(nih_sample, make_options(seed=5)).val.records
    again = build_nih(nih_sample, make_options(seed=5)).val.records
    other = build_nih(nih_sample, make_options(seed=6)).val.records
    assert first == again and first != other


def test_multilabel_counts_match_the_csv(nih_sample: Path, make_options, split_datasets) -> None:
    splits = build_nih_multilabel(nih_sample, make_options())
    assert splits.label_info.class_names == FINDINGS
    rows = [record.label for d in split_datasets(splits).values() for record in d.records]
    counts = np.array(rows).sum(axis=0)
    expected = expected_findings(nih_sample / CSV_NAME).sum(axis=0).to_numpy()
    np.testing.assert_array_equal(counts, expected)


def test_multilabel_subset_and_binary_finding(nih_sample: Path, make_options) -> None:
    splits = build_nih_multilabel(nih_sample, make_options(label_names=("Effusion", "Edema")))
    assert splits.label_info.class_names == ("Effusion", "Edema")
    assert all(len(label) == 2 for label in splits.train.labels)
    binary = build_nih_binary(nih_sample, make_options(label_names=("Effusion",)))
    expected = expected_findings(nih_sample / CSV_NAME)["Effusion"]
    found = {r.path.name: r.label for d in (binary.train, binary.val, binary.test) for r in d.records}
    assert found == expected.to_dict()


def test_unknown_finding_is_a_user_error(nih_sample: Path, make_options) -> None:
    with pytest.raises(UserError, match="Pneumonitis.*--label_names"):
        build_nih_binary(nih_sample, make_options(label_names=("Pneumonitis",)))


def test_items_are_float_images_in_unit_range(nih_sample: Path, make_options) -> None:
    splits = build_nih_binary(nih_sample, make_options())
    image, label = splits.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 1024, 1024)
    assert 0 <= image.min() and image.max() <= 1 and image.std() > 0
    assert label in (0, 1)


def test_flat_layout_in_the_root(nih_sample: Path, tmp_path: Path, make_options) -> None:
    root = tmp_path / "nih"
    names = sorted(p.name for p in (nih_sample / "images").glob("*.png"))
    link_images(nih_sample, root, names)
    shutil.copy(nih_sample / CSV_NAME, root)
    splits = build_nih(root, make_options())
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(names)


def test_kaggle_subfolder_layout_uses_the_images_present(
    nih_sample: Path, tmp_path: Path, make_options, caplog
) -> None:
    root = tmp_path / "nih"
    names = sorted(p.name for p in (nih_sample / "images").glob("*.png"))[:30]
    link_images(nih_sample, root / "images_001" / "images", names[:15])
    link_images(nih_sample, root / "images_002" / "images", names[15:])
    shutil.copy(nih_sample / CSV_NAME, root)
    splits = build_nih_binary(root, make_options())
    found = {r.path.name: r.path for d in (splits.train, splits.val, splits.test) for r in d.records}
    assert sorted(found) == names
    assert found[names[20]].parent == root / "images_002" / "images"
    assert "186 image file(s) listed in the labels are missing" in caplog.text


def test_official_lists_are_honoured(nih_sample: Path, tmp_path: Path, make_options, split_datasets) -> None:
    root = tmp_path / "nih"
    root.mkdir()
    (root / "images").symlink_to(nih_sample / "images")
    shutil.copy(nih_sample / CSV_NAME, root)
    frame = pd.read_csv(nih_sample / CSV_NAME)
    patients = sorted(frame["Patient ID"].unique())
    test_patients = set(patients[::4])
    is_test = frame["Patient ID"].isin(test_patients)
    (root / "test_list.txt").write_text("\n".join(frame.loc[is_test, "Image Index"]) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(frame.loc[~is_test, "Image Index"]) + "\n")

    splits = build_nih(root, make_options(val_fraction=0.25, test_fraction=0.4))
    datasets = split_datasets(splits)
    assert {r.path.name for r in splits.test.records} == set(frame.loc[is_test, "Image Index"])
    train_val = {r.path.name for r in splits.train.records} | {r.path.name for r in splits.val.records}
    assert train_val == set(frame.loc[~is_test, "Image Index"])
    assert len(splits.val) > 0
    assert not patients_of(datasets["train"]) & patients_of(datasets["val"])
    assert not (patients_of(datasets["train"]) | patients_of(datasets["val"])) & patients_of(datasets["test"])


def test_test_list_alone_keeps_patients_disjoint(nih_sample: Path, tmp_path: Path, make_options, caplog) -> None:
    root = tmp_path / "nih"
    root.mkdir()
    (root / "images").symlink_to(nih_sample / "images")
    shutil.copy(nih_sample / CSV_NAME, root)
    frame = pd.read_csv(nih_sample / CSV_NAME)
    # One image of the patient with the most images: the patient's other images must leave train / val.
    busiest = frame["Patient ID"].value_counts().index[0]
    first = frame.loc[frame["Patient ID"] == busiest, "Image Index"].iloc[0]
    (root / "test_list.txt").write_text(first + "\n")
    splits = build_nih(root, make_options())
    assert [r.path.name for r in splits.test.records] == [first]
    rest = {r.patient_id for r in splits.train.records + splits.val.records}
    assert str(busiest) not in rest
    assert "left out to keep splits patient-disjoint" in caplog.text


def test_missing_folder_csv_columns_and_images(nih_sample: Path, tmp_path: Path, make_options) -> None:
    with pytest.raises(UserError, match="NIH ChestX-ray14 needs its folder.*--local_dataset"):
        build_nih(None, make_options())
    with pytest.raises(UserError, match="--extra_local_dataset_paths"):
        build_nih_binary(None, make_options(root_parameter="--extra_local_dataset_paths"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=f"{empty} has no Data_Entry_2017.csv: download.*nihcc.*--local_dataset"):
        build_nih(empty, make_options())

    bad_columns = tmp_path / "bad_columns"
    bad_columns.mkdir()
    pd.read_csv(nih_sample / CSV_NAME).drop(columns=["Patient ID"]).to_csv(bad_columns / CSV_NAME, index=False)
    with pytest.raises(UserError, match="lacks the column.*Patient ID.*its columns are: Image Index"):
        build_nih(bad_columns, make_options())

    no_images = tmp_path / "no_images"
    no_images.mkdir()
    shutil.copy(nih_sample / CSV_NAME, no_images)
    with pytest.raises(UserError, match="has none of the 216 PNG files"):
        build_nih(no_images, make_options())


def test_undecodable_png_is_skipped_and_logged(nih_sample: Path, tmp_path: Path, make_options) -> None:
    root = tmp_path / "nih"
    names = sorted(p.name for p in (nih_sample / "images").glob("*.png"))
    link_images(nih_sample, root / "images", names[1:])
    (root / "images" / names[0]).write_bytes(b"not a png at all")
    shutil.copy(nih_sample / CSV_NAME, root)
    options = make_options(val_fraction=0.0, test_fraction=0.0)
    splits = build_nih(root, options)
    index = [r.path.name for r in splits.train.records].index(names[0])
    assert splits.train[index] is None
    assert splits.train[(index + 1) % len(splits.train)] is not None
    assert str(root / "images" / names[0]) in read_bad_file_log(options.bad_file_log)
