"""RSNA Pneumonia on a Kaggle-layout fixture: real NIH pixels wrapped in JPEG-baseline DICOMs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from innerssl.data.datasets.base import read_bad_file_log
from innerssl.data.datasets.rsna import build_rsna_pneumonia
from innerssl.errors import UserError
from tests.rsna_layout import IMAGE_FOLDER, LABELS_CSV, build_rsna_layout

NUM_IMAGES = 12
POSITIVES = 5
IMAGE_SIZE = 256
"""Source PNGs are shrunk from 1024 px to keep the test fast; pixels stay real radiograph pixels."""
JPEG_TOLERANCE = 0.03
"""Mean absolute difference (of [0, 1] pixels) allowed between the DICOM's decoded JPEG and its source."""


@pytest.fixture
def rsna_root(nih_sample: Path, tmp_path: Path) -> tuple[Path, dict[str, int], dict[str, np.ndarray]]:
    """Kaggle layout with NUM_IMAGES DICOMs; returns the root, the expected labels and the source pixels."""
    root = tmp_path / "rsna"
    labels, pixels = build_rsna_layout(nih_sample / "images", root, NUM_IMAGES, POSITIVES, IMAGE_SIZE)
    return root, labels, pixels


def records_by_patient(splits: object) -> dict[str, object]:
    return {r.patient_id: r for d in (splits.train, splits.val, splits.test) for r in d.records}  # type: ignore[attr-defined]


def test_labels_counts_and_patient_splits(rsna_root, make_options, caplog) -> None:
    root, labels, _ = rsna_root
    splits = build_rsna_pneumonia(root, make_options(val_fraction=0.25, test_fraction=0.25))
    found = {patient: record.label for patient, record in records_by_patient(splits).items()}
    assert found == labels
    assert sum(found.values()) == POSITIVES
    parts = [{r.patient_id for r in d.records} for d in (splits.train, splits.val, splits.test)]
    assert sum(len(p) for p in parts) == NUM_IMAGES and len(set().union(*parts)) == NUM_IMAGES
    assert all(parts)
    assert splits.label_info.class_names == ("No pneumonia", "Pneumonia")
    assert "RSNAPneumonia test:" in caplog.text


def test_decoded_image_matches_its_source(rsna_root, make_options) -> None:
    root, _, pixels = rsna_root
    splits = build_rsna_pneumonia(root, make_options())
    record = splits.train.records[0]
    image, label = splits.train[0]
    assert image.shape == (1, IMAGE_SIZE, IMAGE_SIZE)
    assert label == record.label
    assert np.abs(image[0].numpy() - pixels[record.patient_id]).mean() < JPEG_TOLERANCE


def test_corrupt_dicom_is_skipped_and_logged(rsna_root, make_options) -> None:
    root, _, _ = rsna_root
    broken = "ffffffff-0000-4000-8000-000000000000"
    (root / IMAGE_FOLDER / f"{broken}.dcm").write_bytes(np.random.default_rng(2).bytes(4096))
    with open(root / LABELS_CSV, "a") as handle:
        handle.write(f"{broken},,,,,0\n")
    options = make_options()
    splits = build_rsna_pneumonia(root, options)
    dataset = next(d for d in (splits.train, splits.val, splits.test) if broken in {r.patient_id for r in d.records})
    index = [r.patient_id for r in dataset.records].index(broken)
    assert dataset[index] is None
    logged = read_bad_file_log(options.bad_file_log)
    assert list(logged) == [str(root / IMAGE_FOLDER / f"{broken}.dcm")]
    assert logged[str(root / IMAGE_FOLDER / f"{broken}.dcm")]
    assert all(dataset[i] is not None for i in range(len(dataset)) if i != index)


def test_missing_images_are_left_out(rsna_root, make_options, caplog) -> None:
    root, labels, _ = rsna_root
    with open(root / LABELS_CSV, "a") as handle:
        handle.write("00000000-dead-beef-0000-000000000000,,,,,0\n")
    splits = build_rsna_pneumonia(root, make_options())
    assert set(records_by_patient(splits)) == set(labels)
    assert "1 image file(s) listed in the labels are missing" in caplog.text


def test_stage_1_names_are_accepted(rsna_root, make_options) -> None:
    root, labels, _ = rsna_root
    (root / LABELS_CSV).rename(root / "stage_1_train_labels.csv")
    (root / IMAGE_FOLDER).rename(root / "stage_1_train_images")
    assert set(records_by_patient(build_rsna_pneumonia(root, make_options()))) == set(labels)


def test_user_errors(rsna_root, tmp_path: Path, make_options) -> None:
    root, _, _ = rsna_root
    with pytest.raises(UserError, match="RSNA Pneumonia Detection Challenge needs its folder.*kaggle"):
        build_rsna_pneumonia(None, make_options())
    with pytest.raises(UserError, match=f"{tmp_path} has no stage_2_train_labels.csv"):
        build_rsna_pneumonia(tmp_path, make_options())
    pd.read_csv(root / LABELS_CSV).drop(columns=["Target"]).to_csv(root / LABELS_CSV, index=False)
    with pytest.raises(UserError, match="lacks the column.*Target"):
        build_rsna_pneumonia(root, make_options())
