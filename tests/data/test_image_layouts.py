"""Layout detection (BiaPy, Decathlon, flat folder), carving (per patient for NIH names) and bad files."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest
import tifffile

from innerssl.data.biapy_layout import SPLITS, BiaPyLayout
from innerssl.data.datasets.base import BadFileLog, read_bad_file_log
from innerssl.data.image_layouts import carve_groups, find_layout, patient_groups
from innerssl.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
NUCLEI_2D = SHARED_DATA / "microscopy-sample" / "nuclei-2d"
NUCLEI_3D = SHARED_DATA / "microscopy-sample" / "nuclei-3d"
NIH = SHARED_DATA / "nih-sample"
HIPPOCAMPUS = SHARED_DATA / "hippocampus-sample"


def needs(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"real sample data {folder} is absent (../shared/data beside the checkout)")


def write_tiff(path: Path, shape: tuple[int, ...] = (16, 16), value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full(shape, value, dtype=np.uint16))
    return path


def write_nifti(path: Path, shape: tuple[int, ...] = (6, 7, 5), value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.full(shape, value, dtype=np.uint8), np.eye(4)), path)
    return path


def names(layout: BiaPyLayout, split: str) -> list[str]:
    return [sample.name for sample in layout.splits[split]]


def decathlon(root: Path, count: int, labels: bool = True) -> Path:
    for index in range(count):
        write_nifti(root / "imagesTr" / f"case_{index:03d}.nii.gz", value=index + 1)
        if labels:
            write_nifti(root / "labelsTr" / f"case_{index:03d}.nii.gz", value=index % 3)
    return root


# --- real data -------------------------------------------------------------------------------------------------


def test_nuclei_2d_is_read_as_biapy_and_has_its_own_test_split() -> None:
    needs(NUCLEI_2D)
    layout = find_layout(NUCLEI_2D, 2, val_fraction=0, test_fraction=0.5, seed=0)
    assert names(layout, "train") == ["nuclei-0", "nuclei-1", "nuclei-2"]
    assert names(layout, "test") == ["nuclei-3"]  # test/x as given, test_fraction is not used
    assert layout.val_source == "none" and layout.has_targets("train") and layout.has_targets("test")
    assert layout.channels == 1 and layout.target_channels == 1


def test_nuclei_3d_is_three_dimensional() -> None:
    needs(NUCLEI_3D)
    layout = find_layout(NUCLEI_3D, 3, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert layout.spatial_dims == 3
    info = layout.infos[layout.splits["train"][0].image_path]
    assert info.spatial_shape == (31, 61, 29)
    assert len(layout.splits["test"]) == 1


def test_hippocampus_is_read_as_decathlon_and_carved(caplog: pytest.LogCaptureFixture) -> None:
    needs(HIPPOCAMPUS)
    with caplog.at_level(logging.INFO, logger="innerssl.data.image_layouts"):
        layout = find_layout(HIPPOCAMPUS, 3, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert "layout_kind=Decathlon" in caplog.text
    sizes = {split: len(layout.splits[split]) for split in SPLITS}
    assert sizes == {"train": 43, "val": 5, "test": 12}  # 12 = 0.2 x 60, then 5 = round(0.1 x 48)
    all_names = [name for split in SPLITS for name in names(layout, split)]
    assert len(set(all_names)) == 60
    assert all(layout.has_targets(split) for split in SPLITS)
    sample = layout.splits["train"][0]
    assert sample.image_path.parent.name == "imagesTr" and sample.target_path is not None
    assert sample.target_path.parent.name == "labelsTr" and sample.target_path.name == sample.image_path.name
    assert layout.val_source == "carved" and layout.spatial_dims == 3
    again = find_layout(HIPPOCAMPUS, 3, val_fraction=0.1, test_fraction=0.2, seed=0)
    assert names(again, "test") == names(layout, "test")
    other = find_layout(HIPPOCAMPUS, 3, val_fraction=0.1, test_fraction=0.2, seed=1)
    assert names(other, "test") != names(layout, "test")


def test_nih_copies_are_a_flat_folder_carved_by_patient(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    needs(NIH)
    (tmp_path / "images").mkdir()
    chosen = sorted(path for path in (NIH / "images").glob("*.png") if path.name.startswith(("00001684", "00001543")))
    chosen += sorted((NIH / "images").glob("000000*.png"))[:4]
    for path in chosen:
        shutil.copy(path, tmp_path / "images" / path.name)
    shutil.copy(NIH / "Data_Entry_2017.csv", tmp_path)  # beside images/, as the NIH download has it
    with caplog.at_level(logging.INFO, logger="innerssl.data.image_layouts"):
        layout = find_layout(tmp_path, 2, val_fraction=0.25, test_fraction=0.25, seed=0)
    assert "layout_kind=flat folder" in caplog.text and "patients" in caplog.text
    patients = {split: {name.split("_")[0] for name in names(layout, split)} for split in SPLITS}
    assert all(patients[split] for split in SPLITS)
    assert not (patients["train"] & patients["val"] or patients["train"] & patients["test"])
    assert not patients["val"] & patients["test"]
    assert sum(len(layout.splits[split]) for split in SPLITS) == len(chosen)
    assert not any(layout.has_targets(split) for split in SPLITS) and layout.target_channels is None


def test_whole_nih_sample_carves_patients_apart_but_mixes_rgba_files() -> None:
    needs(NIH)
    all_names = sorted(path.stem for path in (NIH / "images").glob("*.png"))
    groups = patient_groups(all_names)
    assert groups is not None and len(groups) < len(all_names)
    rest, test = carve_groups(groups, 0.2, 0)
    train, val = carve_groups({k: v for k, v in groups.items() if v[0] in set(rest)}, 0.1, 1)
    split_of = {name: split for split, chosen in (("train", train), ("val", val), ("test", test)) for name in chosen}
    assert len(split_of) == len(all_names)
    assert all(len({split_of[name] for name in members}) == 1 for members in groups.values())
    # Two of the real NIH PNGs are RGBA (read as 3 channels) among 8-bit gray ones: the channel check refuses the mix.
    with pytest.raises(UserError, match=r"00000773_001\.png has 3 channel\(s\)"):
        find_layout(NIH, 2, val_fraction=0.1, test_fraction=0.2, seed=0)


# --- synthetic layouts -----------------------------------------------------------------------------------------


def test_biapy_without_test_split_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for name in "abcd":
        write_tiff(tmp_path / "train" / "x" / f"{name}.tif")
    with caplog.at_level(logging.INFO):
        layout = find_layout(tmp_path, 2, val_fraction=0.25, test_fraction=0.5, seed=0)
    assert "no test split" in caplog.text and "layout_kind=BiaPy" in caplog.text
    assert layout.splits["test"] == [] and len(layout.splits["val"]) == 1  # no test carved from BiaPy's train


def test_decathlon_labels_match_images_by_name(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "ok", 5)
    layout = find_layout(root, 3, val_fraction=0.2, test_fraction=0.2, seed=3)
    sizes = [len(layout.splits[split]) for split in SPLITS]
    assert sizes == [3, 1, 1] and all(layout.has_targets(split) for split in SPLITS)
    missing = decathlon(tmp_path / "missing", 4)
    (missing / "labelsTr" / "case_002.nii.gz").unlink()
    with pytest.raises(UserError, match=r"case_002\.nii\.gz has no label"):
        find_layout(missing, 3, 0.1, 0.1, 0)
    orphan = decathlon(tmp_path / "orphan", 3)
    write_nifti(orphan / "labelsTr" / "case_009.nii.gz")
    with pytest.raises(UserError, match=r"case_009\.nii\.gz has no image"):
        find_layout(orphan, 3, 0.1, 0.1, 0)


def test_decathlon_without_labels_and_with_test_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    unlabeled = decathlon(tmp_path / "unlabeled", 4, labels=False)
    layout = find_layout(unlabeled, 3, 0, 0.25, 0)
    assert layout.target_channels is None and len(layout.splits["test"]) == 1
    # imagesTs without labelsTs is left out; the test split is carved from imagesTr.
    root = decathlon(tmp_path / "ts", 4)
    write_nifti(root / "imagesTs" / "case_100.nii.gz")
    with caplog.at_level(logging.INFO, logger="innerssl.data.image_layouts"):
        layout = find_layout(root, 3, 0, 0.25, 0)
    assert "left out" in caplog.text
    assert len(layout.splits["test"]) == 1 and names(layout, "test") != ["case_100"]
    # With labelsTs it is the test split and nothing is carved for test.
    write_nifti(root / "labelsTs" / "case_100.nii.gz")
    layout = find_layout(root, 3, 0, 0.25, 0)
    assert names(layout, "test") == ["case_100"] and layout.has_targets("test")
    assert len(layout.splits["train"]) == 4


def test_ambiguous_root_is_refused(tmp_path: Path) -> None:
    write_tiff(tmp_path / "train" / "x" / "a.tif")
    decathlon(tmp_path, 2)
    with pytest.raises(UserError, match="both train/x .* and imagesTr/"):
        find_layout(tmp_path, 2, 0.1, 0.1, 0)


def test_flat_root_skips_debris_subfolders_and_corrupt_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    for index in range(6):
        np.save(tmp_path / f"img{index}.npy", np.full((12, 10), index, dtype=np.uint8))
    write_tiff(tmp_path / "nested" / "ignored.tif")
    (tmp_path / "._img0.npy").write_bytes(b"resource fork")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.tif").write_bytes(b"II*\0 definitely not a TIFF")
    log = BadFileLog(tmp_path / "logs" / "bad_files.txt")
    with caplog.at_level(logging.INFO, logger="innerssl.data.image_layouts"):
        layout = find_layout(tmp_path, 2, val_fraction=0.2, test_fraction=0.2, seed=0, bad_file_log=log)
    kept = sorted(name for split in SPLITS for name in names(layout, split))
    assert kept == [f"img{index}" for index in range(6)]
    assert set(layout.bad_files) == {tmp_path / "broken.tif"}
    assert set(read_bad_file_log(tmp_path / "logs" / "bad_files.txt")) == {str(tmp_path / "broken.tif")}
    assert "cannot be read" in caplog.text and "layout_kind=flat folder" in caplog.text
    assert patient_groups(kept) is None  # no '<digits>_' names: carved per image


def test_patient_groups_need_numeric_prefixes() -> None:
    assert patient_groups(["00001_000", "00001_001", "00002_000"]) == {
        "00001": ["00001_000", "00001_001"],
        "00002": ["00002_000"],
    }
    assert patient_groups(["cell_1", "cell_2", "tissue_1"]) is None  # a category, not a patient
    assert patient_groups(["00001_000", "plain"]) is None
    assert patient_groups(["00001_000", "00001_001"]) is None  # one patient: nothing to carve by


def test_bad_settings_and_folders_name_their_flag(tmp_path: Path) -> None:
    write_tiff(tmp_path / "a.tif")
    with pytest.raises(UserError, match="--test_fraction=1"):
        find_layout(tmp_path, 2, 0.1, 1.0, 0)
    with pytest.raises(UserError, match="--val_fraction=-0.1"):
        find_layout(tmp_path, 2, -0.1, 0.1, 0)
    with pytest.raises(UserError, match="--local_dataset"):
        find_layout(tmp_path / "absent", 2, 0.1, 0.1, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="--data_root"):
        find_layout(empty, 2, 0.1, 0.1, 0, root_flag="--data_root")
