"""Decathlon-style JSON datalists (--datalist): the listed splits, carving what is not listed as find_layout
carves a Decathlon folder, how --datalist and --local_dataset combine, and one-line errors for bad lists."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel
import numpy as np
import pytest

from innerssl.data.biapy_layout import BiaPyLayout
from innerssl.data.datalist import datalist_layout, read_datalist
from innerssl.data.image_layouts import find_layout
from innerssl.errors import UserError

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HIPPOCAMPUS = SHARED_DATA / "hippocampus-sample"


def write_nifti(path: Path, shape: tuple[int, ...] = (6, 7, 5), value: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(np.full(shape, value, dtype=np.uint8), np.eye(4)), path)
    return path


def decathlon(root: Path, count: int, labels: bool = True) -> Path:
    for index in range(count):
        write_nifti(root / "imagesTr" / f"case_{index:03d}.nii.gz", value=index + 1)
        if labels:
            write_nifti(root / "labelsTr" / f"case_{index:03d}.nii.gz", value=index % 2)
    return root


def entry(index: int, label: bool = True) -> dict[str, str]:
    item = {"image": f"imagesTr/case_{index:03d}.nii.gz"}
    if label:
        item["label"] = f"labelsTr/case_{index:03d}.nii.gz"
    return item


def write_json(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def names(layout: BiaPyLayout, split: str) -> list[str]:
    return [sample.name for sample in layout.splits[split]]


def load(datalist: Path, spatial_dims: int = 3, val: float = 0.2, test: float = 0.2) -> BiaPyLayout:
    return find_layout(None, spatial_dims, val, test, seed=0, datalist=datalist)


# --- the listed splits -----------------------------------------------------------------------------------------


def test_listed_splits_are_used_as_given_and_other_keys_ignored(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 8)
    datalist = write_json(
        root / "dataset_0.json",
        {
            "name": "Task",
            "labels": {"0": "background"},
            "numTraining": 8,
            "modality": {"0": "MRI"},
            "training": [entry(i) for i in (0, 1, 2, 3, 4)],
            "validation": [entry(5), entry(6)],
            "test": [{**entry(7), "note": "extra keys are ignored"}],
        },
    )
    layout = load(datalist)
    assert names(layout, "train") == ["case_000", "case_001", "case_002", "case_003", "case_004"]
    assert names(layout, "val") == ["case_005", "case_006"] and names(layout, "test") == ["case_007"]
    assert layout.val_source == "datalist" and layout.root == root
    sample = layout.splits["val"][0]
    assert sample.image_path == root / "imagesTr" / "case_005.nii.gz"
    assert sample.target_path == root / "labelsTr" / "case_005.nii.gz"


def test_paths_resolve_against_the_json_folder_and_absolute_paths_stay(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 3)
    datalist = write_json(
        tmp_path / "lists" / "fold0.json",
        {
            "training": [
                {"image": "../Task/imagesTr/case_000.nii.gz"},
                {"image": str(root / "imagesTr/case_001.nii.gz")},
            ]
        },
    )
    listed = read_datalist(datalist, 3)
    assert listed["train"] == {
        "case_000": (root / "imagesTr" / "case_000.nii.gz", None),
        "case_001": (root / "imagesTr" / "case_001.nii.gz", None),
    }


def test_missing_validation_is_carved_exactly_as_from_the_decathlon_folder(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 10)
    absolute = [{key: str(root / path) for key, path in entry(i).items()} for i in range(10)]
    datalist = write_json(tmp_path / "list.json", {"training": absolute})
    from_list = load(datalist, val=0.3, test=0.2)
    from_folder = find_layout(root, 3, 0.3, 0.2, seed=0)
    assert from_list.val_source == from_folder.val_source == "carved"
    for split in ("train", "val", "test"):
        assert names(from_list, split) == names(from_folder, split), split
    assert len(names(from_list, "test")) == 2 and len(names(from_list, "val")) == 2


def test_unlabelled_decathlon_test_list_is_left_out_and_the_test_split_carved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The MSD's dataset.json: bare test paths without labels, useless for scoring a labelled task."""
    root = decathlon(tmp_path / "Task", 6)
    write_nifti(root / "imagesTs" / "case_100.nii.gz")
    datalist = write_json(
        root / "dataset.json",
        {"training": [entry(i) for i in range(6)], "test": ["./imagesTs/case_100.nii.gz"]},
    )
    with caplog.at_level(logging.INFO):
        layout = load(datalist, val=0, test=0.34)
    assert "case_100" not in names(layout, "test") and len(names(layout, "test")) == 2
    assert names(layout, "test") == names(find_layout(root, 3, 0, 0.34, seed=0), "test")
    assert "test entries have no labels and are left out" in caplog.text


def test_unlabelled_test_list_of_an_unlabelled_dataset_is_kept(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 4, labels=False)
    write_nifti(root / "imagesTs" / "case_100.nii.gz")
    datalist = write_json(
        root / "list.json",
        {"training": [entry(i, label=False) for i in range(4)], "test": ["imagesTs/case_100.nii.gz"]},
    )
    layout = load(datalist, val=0.25, test=0.5)
    assert names(layout, "test") == ["case_100"] and layout.target_channels is None
    assert len(names(layout, "train")) == 3 and len(names(layout, "val")) == 1


def test_hippocampus_sample_datalist_gives_its_exact_splits(tmp_path: Path) -> None:
    if not HIPPOCAMPUS.is_dir():
        pytest.skip(f"real sample data {HIPPOCAMPUS} is absent (../shared/data beside the checkout)")
    cases = sorted(path.name for path in (HIPPOCAMPUS / "imagesTr").glob("*.nii.gz"))[:10]

    def item(name: str) -> dict[str, str]:
        return {"image": str(HIPPOCAMPUS / "imagesTr" / name), "label": str(HIPPOCAMPUS / "labelsTr" / name)}

    datalist = write_json(
        tmp_path / "hippocampus.json",
        {
            "training": [item(name) for name in cases[:6]],
            "validation": [item(name) for name in cases[6:8]],
            "test": [item(name) for name in cases[8:]],
        },
    )
    layout = load(datalist, val=0.5, test=0.5)
    stems = [name.removesuffix(".nii.gz") for name in cases]
    assert (names(layout, "train"), names(layout, "val"), names(layout, "test")) == (stems[:6], stems[6:8], stems[8:])
    assert not layout.bad_files and layout.channels == 1 and layout.target_channels == 1
    assert all(layout.has_targets(split) for split in ("train", "val", "test"))


def test_shape_mismatch_of_a_listed_label_is_refused_by_load_split(tmp_path: Path) -> None:
    from innerssl.data.normalisation import Normalisation
    from innerssl.data.patch_datamodule import load_split

    root = tmp_path / "Task"
    write_nifti(root / "imagesTr" / "a.nii.gz", shape=(6, 7, 5))
    write_nifti(root / "labelsTr" / "a.nii.gz", shape=(6, 7, 4))
    datalist = write_json(
        root / "list.json", {"training": [{"image": "imagesTr/a.nii.gz", "label": "labelsTr/a.nii.gz"}]}
    )
    layout = load(datalist, val=0, test=0)
    with pytest.raises(UserError, match=r"labelsTr/a\.nii\.gz has the spatial shape \(4, 7, 6\) but its image"):
        load_split(layout, "train", Normalisation.parse("div"), "labels")


def test_dicom_series_folder_is_a_listed_image_in_3d_only(tmp_path: Path) -> None:
    from tests.data.test_dicom_volumes import write_series

    write_series(tmp_path / "series" / "ct_1", count=3)
    datalist = write_json(tmp_path / "list.json", {"training": [{"image": "series/ct_1"}]})
    layout = load(datalist, val=0, test=0)
    assert names(layout, "train") == ["ct_1"] and layout.infos[tmp_path / "series" / "ct_1"].spatial_shape == (3, 8, 8)
    with pytest.raises(UserError, match=r"entry 0 is a folder: DICOM series folders are volumes, read with"):
        load(datalist, spatial_dims=2, val=0, test=0)


# --- --datalist and --local_dataset ------------------------------------------------------------------------


def test_local_dataset_holding_the_datalist_is_the_root(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 3)
    datalist = write_json(root / "splits" / "fold0.json", {"training": [{"image": "../imagesTr/case_000.nii.gz"}]})
    assert load(datalist, val=0, test=0).root == root / "splits"
    assert find_layout(root, 3, 0, 0, seed=0, datalist=datalist).root == root


def test_local_dataset_elsewhere_than_the_datalist_is_refused(tmp_path: Path) -> None:
    decathlon(tmp_path / "Task", 2)
    other = tmp_path / "Other"
    other.mkdir()
    datalist = write_json(tmp_path / "Task" / "list.json", {"training": [entry(0)]})
    with pytest.raises(UserError, match=r"--datalist=.*list\.json is not inside --local_dataset=.*Other: pass"):
        find_layout(other, 3, 0, 0, seed=0, datalist=datalist)


def test_without_either_flag_or_with_a_json_as_local_dataset_the_error_names_datalist(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pass its folder with --local_dataset=<folder> or a JSON datalist with"):
        find_layout(None, 3, 0, 0, seed=0)
    datalist = write_json(tmp_path / "list.json", {"training": []})
    with pytest.raises(UserError, match=r"is a JSON file, not a folder: pass a datalist with --datalist="):
        find_layout(datalist, 3, 0, 0, seed=0)


def test_decathlon_folder_with_dataset_json_keeps_reading_its_folders(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 5)
    write_json(root / "dataset.json", {"training": [entry(0), entry(1)]})
    assert sum(len(names(find_layout(root, 3, 0.2, 0, seed=0), split)) for split in ("train", "val")) == 5
    assert names(find_layout(root, 3, 0, 0, seed=0, datalist=root / "dataset.json"), "train") == [
        "case_000",
        "case_001",
    ]


def test_datalist_layout_is_the_module_entry_point(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 3)
    datalist = write_json(root / "list.json", {"training": [entry(0), entry(1)], "validation": [entry(2)]})
    layout = datalist_layout(datalist, 3, 0.5, 0, seed=0)
    assert (names(layout, "train"), names(layout, "val"), names(layout, "test")) == (
        ["case_000", "case_001"],
        ["case_002"],
        [],
    )


# --- mistakes --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"training": [',
            r"list\.json is not valid JSON \(Expecting value at line 1, column 15\): fix the --datalist",
        ),
        ("[1, 2]", r"list\.json holds a JSON list, not an object with a 'training' list"),
        ({"validation": [{"image": "imagesTr/case_000.nii.gz"}]}, r"list\.json has no 'training' list"),
        ({"training": []}, r"list\.json has no 'training' list \(or an empty one\)"),
        ({"training": "imagesTr"}, r"list\.json has no 'training' list"),
        (
            {"training": [entry(0), {"label": "labelsTr/case_001.nii.gz"}]},
            r'training entry 1 has no "image" \(keys: label\)',
        ),
        ({"training": ["imagesTr/case_000.nii.gz"]}, r'training entry 0 is a bare path; write it as \{"image": '),
        ({"training": [{"image": ["a.nii.gz", "b.nii.gz"]}]}, r'training entry 0 lists several files as its "image"'),
        ({"training": [{"image": 3}]}, r'training entry 0 has the "image" 3; give a file path'),
        (
            {"training": [entry(0), {"image": "imagesTr/missing.nii.gz"}]},
            r"the image .*imagesTr/missing\.nii\.gz of training entry 1 does not exist: fix the path \(relative paths",
        ),
        (
            {"training": [{"image": "imagesTr/case_000.nii.gz", "label": "labelsTr/nope.nii.gz"}]},
            r"the label .*labelsTr/nope\.nii\.gz of training entry 0 does not exist",
        ),
        (
            {"training": [entry(0), entry(1, label=False)]},
            r"1 of the 2 'training' entries have a \"label\" and the others not \(training entry 1 has none, training "
            r"entry 0 has one\): give every training entry a label, or none",
        ),
        (
            {"training": [entry(0), entry(1)], "test": [entry(1)]},
            r"lists the image .*case_001\.nii\.gz in two splits \(training entry 1 and test entry 0\): list each",
        ),
        ({"training": [entry(0), entry(0)]}, r"twice \(training entry 0 and training entry 1\)"),
        (
            {"training": [entry(0), {"image": "other/case_000.tif"}]},
            r"training entry 0 and training entry 1 share the sample name 'case_000'",
        ),
        (
            {"training": [{"image": "notes.txt"}]},
            r"the image .*notes\.txt of training entry 0 is not a supported image",
        ),
        ({"training": [entry(0)], "validation": {"image": "x"}}, r"'validation' is a dict, not a list of entries"),
    ],
)
def test_mistakes_are_one_line_errors_naming_the_file_and_entry(tmp_path: Path, content: object, message: str) -> None:
    root = decathlon(tmp_path / "Task", 2)
    (root / "other").mkdir()
    (root / "other" / "case_000.tif").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    datalist = write_json(root / "list.json", content)
    with pytest.raises(UserError, match=message) as caught:
        load(datalist)
    assert "\n" not in str(caught.value) and str(datalist) in str(caught.value)


def test_absent_datalist_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--datalist=.*absent\.json is not a file: pass the JSON datalist"):
        load(tmp_path / "absent.json")


def test_unreadable_listed_file_is_skipped_and_counted_not_fatal(tmp_path: Path) -> None:
    root = decathlon(tmp_path / "Task", 3, labels=False)
    (root / "imagesTr" / "case_001.nii.gz").write_bytes(b"not a nifti")
    datalist = write_json(root / "list.json", {"training": [entry(i, label=False) for i in range(3)]})
    layout = load(datalist, val=0, test=0)
    assert names(layout, "train") == ["case_000", "case_002"]
    assert list(layout.bad_files) == [root / "imagesTr" / "case_001.nii.gz"]


def test_copying_the_sample_into_tmp_keeps_relative_paths_working(tmp_path: Path) -> None:
    """A datalist moves with its dataset: relative paths follow the JSON, not the working directory."""
    root = decathlon(tmp_path / "Task", 2)
    write_json(root / "list.json", {"training": [entry(0), entry(1)]})
    moved = shutil.copytree(root, tmp_path / "Moved")
    layout = load(moved / "list.json", val=0, test=0)
    assert [sample.image_path.parent for sample in layout.splits["train"]] == [moved / "imagesTr"] * 2


def test_the_containers_flags_find_a_relative_datalist_inside_the_dataset(tmp_path: Path, monkeypatch) -> None:
    from configs.volumes import Hippocampus_UNETR

    root = decathlon(tmp_path / "Task", 4)
    write_json(root / "dataset.json", {"training": [entry(0), entry(1), entry(2)], "validation": [entry(3)]})
    monkeypatch.chdir(tmp_path)  # not the dataset's folder: dataset.json is found inside --local_dataset
    container = Hippocampus_UNETR()
    container.apply_flags({"local_dataset": str(root), "datalist": "dataset.json", "test_fraction": "0"})
    container.validate()
    layout = container.find_dataset_layout()
    assert names(layout, "train") == ["case_000", "case_001", "case_002"] and names(layout, "val") == ["case_003"]
    write_json(tmp_path / "dataset.json", {"training": [entry(0)]})  # a second file of that name, in the cwd
    with pytest.raises(UserError, match="names two files"):
        container.validate()
    for flags, message in (
        ({"datalist": "missing.json"}, "--datalist=missing.json is not a file"),
        ({"local_dataset": str(root / "dataset.json")}, "is a JSON file, not a folder: pass it as --datalist="),
    ):
        wrong = Hippocampus_UNETR()
        wrong.apply_flags(flags)
        with pytest.raises(UserError, match=message):
            wrong.validate()
