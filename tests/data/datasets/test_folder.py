"""ImageFolder: class folders, split folders as downloads publish them (Kermany's chest X-rays with their
archive debris and nested copy), split files, seeded patient-level splits and user errors."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from innerssl.data.datasets.base import DatasetOptions, DatasetSplits, ImageRecord, read_bad_file_log
from innerssl.data.datasets.folder import MIN_VAL_IMAGES, build_image_folder, patient_level_split, patient_rule
from innerssl.errors import UserError

IMAGES_PER_CLASS = 10
TINY = 8
"""Side of the generated split-layout images in pixels."""
JUNK = b"\x00\x05\x16\x07Mac OS X        "
"""Bytes of an AppleDouble resource fork: not an image, so reading one as an image would log a bad file."""

WriteImage = Callable[..., Path]


def make_folder(root: Path, write_image: WriteImage, classes: tuple[str, ...]) -> Path:
    for name in classes:
        for index in range(IMAGES_PER_CLASS):
            suffix = (".png", ".jpg", ".tif")[index % 3]
            write_image(root / name / f"img{index}{suffix}")
    (root / ".hidden").mkdir()
    (root / classes[0] / "notes.txt").write_text("not an image")
    return root


def write_junk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(JUNK)
    return path


def add_debris(folder: Path) -> None:
    """What macOS, Windows and zip tools leave in a download: none of it is an image of the dataset."""
    write_junk(folder / ".DS_Store")
    write_junk(folder / "Thumbs.db")
    write_junk(folder / "desktop.ini")
    for image in [path for path in folder.rglob("*.jpeg") if not path.name.startswith(".")][:3]:
        write_junk(image.with_name(f"._{image.name}"))
    write_junk(folder / ".thumbnails" / "IM-9999-0001.jpeg")  # a hidden folder, with an image-like name
    macosx = folder / "__MACOSX" / folder.name / "train" / "NORMAL"
    write_junk(macosx / "._IM-0115-0001.jpeg")
    write_junk(macosx / "IM-0115-0001.jpeg")  # even an image-like name inside __MACOSX is debris


# Kermany et al.'s naming: NORMAL images are IM-<patient>-<image> or NORMAL2-IM-<patient>-<image>, PNEUMONIA
# images person<patient>_<bacteria|virus>_<image>; several images per patient so a per-file carve would leak.
KERMANY = {
    "train": {
        "NORMAL": [f"IM-01{p:02d}-000{i}" for p in range(10, 18) for i in (1, 2)] + ["NORMAL2-IM-0372-0001"],
        "PNEUMONIA": [f"person{p}_bacteria_{p * 10 + i}" for p in range(1, 9) for i in (1, 2)] + ["person1_virus_6"],
    },
    "val": {"NORMAL": ["NORMAL2-IM-1427-0001", "NORMAL2-IM-1430-0001"], "PNEUMONIA": ["person1946_bacteria_4874"]},
    "test": {
        "NORMAL": ["IM-0001-0001", "IM-0003-0001", "NORMAL2-IM-0007-0001"],
        "PNEUMONIA": ["person100_bacteria_475", "person100_bacteria_477", "person101_virus_187"],
    },
}


def kermany_files(dataset: Path, split: str) -> set[Path]:
    return {dataset / split / name / f"{stem}.jpeg" for name, stems in KERMANY[split].items() for stem in stems}


def make_kermany(download: Path, write_image: WriteImage) -> Path:
    """The Kaggle "Chest X-Ray Images (Pneumonia)" download as unzipped: ``chest_xray/{train,val,test}/<class>``
    with debris, a ``__MACOSX`` tree and the nested copy ``chest_xray/chest_xray/``; returns ``chest_xray/``."""
    dataset = download / "chest_xray"
    for split in KERMANY:
        for path in kermany_files(dataset, split):
            write_image(path, size=TINY)
    add_debris(dataset)
    for split in KERMANY:
        shutil.copytree(dataset / split, dataset / "chest_xray" / split)
    return dataset


def paths(*datasets: object) -> list[Path]:
    return [record.path for dataset in datasets for record in dataset.records]  # type: ignore[attr-defined]


def assert_no_bad_files(splits: DatasetSplits, options: DatasetOptions) -> None:
    """Decodes every image: debris taken for an image would fail here and land in the bad-file log."""
    for dataset in (splits.train, splits.val, splits.test):
        for index in range(len(dataset) if dataset is not None else 0):
            assert dataset[index] is not None
    assert options.bad_file_log is not None and read_bad_file_log(options.bad_file_log) == {}


# --- class-folder layout -------------------------------------------------------------------------------------


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


def test_class_layout_skips_debris_and_splits_by_patient(tmp_path: Path, write_image, make_options) -> None:
    root = tmp_path / "flat"
    for name, stems in KERMANY["train"].items():
        for stem in stems:
            write_image(root / name / f"{stem}.jpeg", size=TINY)
    add_debris(root)
    options = make_options(val_fraction=0.25, test_fraction=0.25)
    splits = build_image_folder(root, options)
    assert splits.label_info.class_names == ("NORMAL", "PNEUMONIA")  # no __MACOSX or .thumbnails class
    found = paths(splits.train, splits.val, splits.test)
    assert sorted(found) == sorted(
        root / name / f"{stem}.jpeg" for name, stems in KERMANY["train"].items() for stem in stems
    )
    patients = [{r.patient_id for r in dataset.records} for dataset in (splits.train, splits.val, splits.test)]
    assert all(patients) and not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    assert_no_bad_files(splits, options)


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
    with pytest.raises(UserError, match="folder_patient_pattern='\\(' is not a regular expression"):
        build_image_folder(root, make_options(folder_patient_pattern="("))


# --- patients -------------------------------------------------------------------------------------------------


def test_patient_ids_from_file_names() -> None:
    patient_of = patient_rule(DatasetOptions())
    expected = {
        "person1234_bacteria_5678.jpeg": "person1234",
        "person1234_virus_99.jpeg": "person1234",
        "IM-0115-0001.jpeg": "IM-0115",
        "NORMAL2-IM-0372-0001.jpeg": "NORMAL2-IM-0372",
    }
    assert {name: patient_of(Path("x") / name) for name in expected} == expected
    # Names the rule does not recognise are one patient each, never lumped together.
    for name in ("img0.png", "image-001.png", "00000001_000.png"):
        assert patient_of(Path("x") / name) == str(Path("x") / name)
    assert patient_rule(DatasetOptions(folder_patient_pattern=r"(\d+)_"))(Path("00000001_000.png")) == "00000001"
    assert patient_rule(DatasetOptions(folder_patient_pattern=""))(Path("IM-0115-0001.jpeg")) == "IM-0115-0001.jpeg"


def test_a_patient_with_images_of_two_classes_stays_in_one_split() -> None:
    # 60 patients, half of each class; 10 of the first class also have an image of the second. Stratifying images
    # by their own class would shuffle those 10 once among class-0 patients and once among class-1 patients.
    records = [ImageRecord(Path(f"{p}.png"), label=int(p >= 30), patient_id=f"p{p}") for p in range(60)]
    records += [ImageRecord(Path(f"{p}_b.png"), label=1, patient_id=f"p{p}") for p in range(10)]
    train, val, test = patient_level_split(records, 0.3, 0.3, seed=3)
    split_of: dict[str, str] = {}
    for name, indices in (("train", train), ("val", val), ("test", test)):
        assert len(indices)
        for index in indices:
            assert split_of.setdefault(records[index].patient_id, name) == name
    assert len(split_of) == 60 and sorted([*train, *val, *test]) == list(range(len(records)))


# --- split-folder layout --------------------------------------------------------------------------------------


@pytest.mark.parametrize("passed", ["chest_xray", "download"], ids=["dataset folder", "wrapper folder"])
def test_kermany_download(tmp_path: Path, write_image, make_options, caplog, passed: str) -> None:
    download = tmp_path / "download"
    dataset = make_kermany(download, write_image)
    options = make_options(val_fraction=0.25)
    splits = build_image_folder(dataset if passed == "chest_xray" else download, options)

    assert splits.label_info.task == "binary"
    assert splits.label_info.class_names == ("NORMAL", "PNEUMONIA")
    # The published test split exactly; the tiny val/ merged into train/, from which val is carved.
    assert sorted(paths(splits.test)) == sorted(kermany_files(dataset, "test"))
    train_and_val = paths(splits.train, splits.val)
    assert len(train_and_val) == len(set(train_and_val))
    assert set(train_and_val) == kermany_files(dataset, "train") | kermany_files(dataset, "val")
    assert all(r.label == (1 if r.path.parent.name == "PNEUMONIA" else 0) for r in splits.test.records)
    # Patient-level carve, stratified: both classes in val, no patient on both sides.
    assert sorted(set(splits.val.labels)) == [0, 1]
    train_patients = {r.patient_id for r in splits.train.records}
    val_patients = {r.patient_id for r in splits.val.records}
    assert val_patients and not train_patients & val_patients
    assert {"IM-0110", "person1", "NORMAL2-IM-1427"} <= train_patients | val_patients
    # Nothing from the nested copy, __MACOSX or hidden files.
    found = paths(splits.train, splits.val, splits.test)
    assert all(path.parent.parent.parent == dataset for path in found)
    assert not any(part.startswith(".") or part == "__MACOSX" for path in found for part in path.parts)
    assert_no_bad_files(splits, options)

    total_train = len(kermany_files(dataset, "train")) + len(kermany_files(dataset, "val"))
    assert len(splits.train) + len(splits.val) == total_train and len(splits.test) == 6
    assert f"val/ has only 3 images (fewer than {MIN_VAL_IMAGES}); merged its 3 images into train/" in caplog.text
    assert "carved a patient-level validation split of 25% of the patients from train/" in caplog.text
    assert f"ignoring {dataset / 'chest_xray'}, an exact copy of {dataset}" in caplog.text
    assert ("using chest_xray, the folder under" in caplog.text) == (passed == "download")
    assert "ImageFolder test: 6 images (NORMAL=3, PNEUMONIA=3)" in caplog.text
    assert "have images in both" not in caplog.text


def test_split_folder_synonyms_any_case_and_a_class_missing_from_one(
    tmp_path: Path, write_image, make_options, caplog
) -> None:
    root = tmp_path / "data"
    expected: dict[str, set[Path]] = {"Training": set(), "Valid": set(), "TESTING": set()}
    per_class = {"Training": 4, "Valid": MIN_VAL_IMAGES // 2 + 1, "TESTING": 3}
    for folder, count in per_class.items():
        for name in ("cat", "dog") if folder != "TESTING" else ("dog",):  # no cats in the test folder
            for index in range(count):
                expected[folder].add(write_image(root / folder / name / f"{name}{index}-{folder}.png", size=TINY))
    expected["TESTING"].add(write_image(root / "TESTING" / "dog" / "case1-2.png", size=TINY))
    expected["Training"].add(write_image(root / "Training" / "dog" / "case1-1.png", size=TINY))
    splits = build_image_folder(root, make_options())
    assert splits.label_info.class_names == ("cat", "dog")
    # A val folder this size is used as published, not carved.
    assert set(paths(splits.train)) == expected["Training"]
    assert set(paths(splits.val)) == expected["Valid"]
    assert set(paths(splits.test)) == expected["TESTING"] and set(splits.test.labels) == {1}
    assert "carved" not in caplog.text
    assert "1 patient(s) have images in both Training/ + val and TESTING/ (case1)" in caplog.text


def test_no_val_or_test_folder(tmp_path: Path, write_image, make_options, caplog) -> None:
    root = tmp_path / "data"
    written = {write_image(root / "train" / name / f"{name}{i}.png", size=TINY) for name in "ab" for i in range(6)}
    splits = build_image_folder(root, make_options(val_fraction=0.5))
    assert splits.test is None
    assert set(paths(splits.train, splits.val)) == written and len(splits.val) == 6
    assert f"{root} has no val/ (or valid/, validation/) folder; carved" in caplog.text
    assert "so no test split" in caplog.text


def test_a_class_only_val_or_test_has_is_refused(tmp_path: Path, write_image, make_options) -> None:
    root = tmp_path / "data"
    for split, names in {"train": ("cat", "dog"), "test": ("cat", "dog", "bird")}.items():
        for name in names:
            write_image(root / split / name / f"{name}.png", size=TINY)
    with pytest.raises(UserError, match="test/ has class folder\\(s\\) bird that train/ lacks"):
        build_image_folder(root, make_options())


@pytest.mark.parametrize(
    "files",
    [
        ("train/NORMAL/a.png", "train/PNEUMONIA/b.png", "NORMAL/c.png"),
        ("NORMAL/a.png", "PNEUMONIA/b.png", "test/c.png"),
    ],
    ids=["class folder beside split folders", "class folder named test"],
)
def test_mixed_layout_is_refused_naming_both_layouts(
    tmp_path: Path, write_image, make_options, files: tuple[str, ...]
) -> None:
    root = tmp_path / "data"
    for name in files:
        write_image(root / name, size=TINY)
    with pytest.raises(UserError) as raised:
        build_image_folder(root, make_options())
    message = str(raised.value)
    assert "\n" not in message and "mixes split folders" in message
    assert "root/<class>/<images>" in message and "root/<split>/<class>/<images>" in message
    assert "train|training, val|valid|validation, test|testing" in message


def test_two_different_dataset_roots_are_refused(tmp_path: Path, write_image, make_options) -> None:
    download = tmp_path / "download"
    for copy, name in (("first", "a.png"), ("second", "b.png")):
        write_image(download / copy / "train" / "cat" / name, size=TINY)
        write_image(download / copy / "train" / "dog" / name, size=TINY)
    with pytest.raises(UserError, match=f"two different datasets.*{download / 'first'} and {download / 'second'}"):
        build_image_folder(download, make_options())
    # A nested copy that differs from the outer dataset is no copy: refused too, not half-used.
    dataset = make_kermany(tmp_path / "kermany", write_image)
    next((dataset / "chest_xray" / "test" / "NORMAL").iterdir()).unlink()
    with pytest.raises(UserError, match="two different datasets"):
        build_image_folder(dataset, make_options())


def test_ssl_pretraining_sees_only_the_training_images(tmp_path: Path, write_image) -> None:
    from innerssl.containers.ssl import SSLContainer

    dataset = make_kermany(tmp_path / "download", write_image)
    container = SSLContainer(ssl_training_dataset_name="ImageFolder", local_dataset=str(dataset), val_fraction=0.25)
    splits = container.ssl_splits(run_folder=tmp_path / "run")
    training = set(paths(splits.train))
    assert training and training < kermany_files(dataset, "train") | kermany_files(dataset, "val")
    assert not training & set(paths(splits.val))
    assert not (tmp_path / "run" / "bad_files.txt").exists()
