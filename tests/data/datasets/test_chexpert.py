"""CheXpert on a tiny fixture in the download's layout: path prefix, frontal views, uncertainty policies."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from innerssl.data.datasets.chexpert import OBSERVATIONS, build_chexpert, build_chexpert_binary
from innerssl.errors import UserError

PREFIX = "CheXpert-v1.0-small"
TRAIN_PATIENTS = 8
VALID_PATIENTS = 2


def row(path: str, view: str, **labels: float) -> dict[str, object]:
    values = {name: labels.get(name.replace(" ", "_"), float("nan")) for name in OBSERVATIONS}
    return {"Path": path, "Sex": "Female", "Age": 60, "Frontal/Lateral": view, "AP/PA": "AP", **values}


@pytest.fixture
def chexpert_parent(tmp_path: Path, write_image) -> Path:
    """``parent/CheXpert-v1.0-small/{train,valid}.csv`` and JPEGs; each patient has a frontal and a lateral
    view. Pneumonia: patient 1 positive, patient 2 uncertain (-1), patient 3 negative, others blank."""
    parent = tmp_path / "chexpert"
    folder = parent / PREFIX
    train_rows, valid_rows = [], []
    for number in range(1, TRAIN_PATIENTS + VALID_PATIENTS + 1):
        split = "train" if number <= TRAIN_PATIENTS else "valid"
        pneumonia = {1: 1.0, 2: -1.0, 3: 0.0}.get(number, float("nan"))
        for view, file in (("Frontal", "view1_frontal.jpg"), ("Lateral", "view2_lateral.jpg")):
            relative = f"{PREFIX}/{split}/patient{number:05d}/study1/{file}"
            write_image(parent / relative)
            target = train_rows if split == "train" else valid_rows
            target.append(row(relative, view, Pneumonia=pneumonia, Edema=1.0, Cardiomegaly=-1.0))
    pd.DataFrame(train_rows).to_csv(folder / "train.csv", index=False)
    pd.DataFrame(valid_rows).to_csv(folder / "valid.csv", index=False)
    return parent


def records(splits: object) -> list:
    return [r for d in (splits.train, splits.val, splits.test) for r in d.records]  # type: ignore[attr-defined]


def test_parent_and_dataset_folder_give_the_same_images(chexpert_parent: Path, make_options) -> None:
    from_parent = build_chexpert(chexpert_parent, make_options())
    from_folder = build_chexpert(chexpert_parent / PREFIX, make_options())
    assert records(from_parent) == records(from_folder)
    assert len(records(from_parent)) == 2 * (TRAIN_PATIENTS + VALID_PATIENTS)
    assert all(r.path.is_file() and r.path.parent.parent.parent.parent.name == PREFIX for r in records(from_parent))
    image, label = from_parent.train[0]
    assert image.shape == (1, 16, 16) and label.shape == (len(OBSERVATIONS),)


def test_valid_csv_is_the_test_set_and_splits_are_patient_level(chexpert_parent: Path, make_options) -> None:
    splits = build_chexpert(chexpert_parent, make_options(val_fraction=0.25))
    test_patients = {r.patient_id for r in splits.test.records}
    assert test_patients == {f"patient{n:05d}" for n in range(TRAIN_PATIENTS + 1, TRAIN_PATIENTS + VALID_PATIENTS + 1)}
    train, val = ({r.patient_id for r in d.records} for d in (splits.train, splits.val))
    assert len(val) == 2 and not train & val and not (train | val) & test_patients
    assert len(train | val) == TRAIN_PATIENTS


def test_frontal_only(chexpert_parent: Path, make_options) -> None:
    splits = build_chexpert(chexpert_parent, make_options(frontal_only=True))
    assert len(records(splits)) == TRAIN_PATIENTS + VALID_PATIENTS
    assert all(r.path.name == "view1_frontal.jpg" for r in records(splits))


@pytest.mark.parametrize(("policy", "uncertain"), [("ones", 1.0), ("zeros", 0.0), ("ignore", math.nan)])
def test_uncertainty_policy_multilabel(chexpert_parent: Path, make_options, policy: str, uncertain: float) -> None:
    names = ("Pneumonia", "Edema", "Cardiomegaly")
    splits = build_chexpert(chexpert_parent, make_options(label_names=names, uncertainty_policy=policy))
    assert splits.label_info.class_names == names and splits.label_info.task == "multilabel"
    by_patient = {r.patient_id: r.label for r in records(splits)}
    pneumonia = {1: 1.0, 2: uncertain, 3: 0.0, 4: 0.0}
    for number, expected in pneumonia.items():
        label = by_patient[f"patient{number:05d}"]
        assert label[0] == expected or (math.isnan(expected) and math.isnan(label[0]))
        assert label[1] == 1.0
        assert label[2] == uncertain or (math.isnan(uncertain) and math.isnan(label[2]))


@pytest.mark.parametrize(("policy", "patient2"), [("ones", 1), ("zeros", 0), ("ignore", None)])
def test_uncertainty_policy_binary(chexpert_parent: Path, make_options, policy: str, patient2: int | None) -> None:
    splits = build_chexpert_binary(chexpert_parent, make_options(uncertainty_policy=policy))
    assert splits.label_info.class_names == ("No Pneumonia", "Pneumonia")
    by_patient = {r.patient_id: r.label for r in records(splits)}
    assert by_patient["patient00001"] == 1 and by_patient["patient00003"] == 0 and by_patient["patient00004"] == 0
    assert by_patient.get("patient00002") == patient2
    assert len(records(splits)) == 2 * (TRAIN_PATIENTS + VALID_PATIENTS) - (2 if patient2 is None else 0)


def test_user_errors(chexpert_parent: Path, tmp_path: Path, make_options) -> None:
    with pytest.raises(UserError, match="CheXpert needs its folder.*--local_dataset"):
        build_chexpert(None, make_options())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="has no train.csv"):
        build_chexpert(empty, make_options())
    with pytest.raises(UserError, match="no finding.*Pneumonitis"):
        build_chexpert_binary(chexpert_parent, make_options(label_names=("Pneumonitis",)))
    train_csv = chexpert_parent / PREFIX / "train.csv"
    pd.read_csv(train_csv).drop(columns=["Edema", "Frontal/Lateral"]).to_csv(train_csv, index=False)
    with pytest.raises(UserError, match=f"{train_csv} lacks the column.*Edema"):
        build_chexpert(chexpert_parent, make_options())
    with pytest.raises(UserError, match="lacks the column.*Frontal/Lateral"):
        build_chexpert_binary(chexpert_parent, make_options(frontal_only=True))
    (chexpert_parent / PREFIX / "valid.csv").unlink()
    with pytest.raises(UserError, match="has no valid.csv"):
        build_chexpert_binary(chexpert_parent, make_options())
