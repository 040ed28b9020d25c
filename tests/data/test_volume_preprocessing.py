"""MONAI's deterministic volume preprocessing at load (orientation, spacing, window, foreground crop, padding) on
small generated NIfTI volumes, its flags' refusals, and predictions written back in the source file's grid."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import nibabel
import numpy as np
import pytest
import tifffile
import torch

from configs.volumes import Hippocampus_Segmentation
from innerssl.containers.segmentation import SegmentationContainer
from innerssl.data.image_layouts import find_layout
from innerssl.data.normalisation import Normalisation
from innerssl.data.patch_datamodule import LoadedImage, load_split
from innerssl.data.volume_preprocessing import VolumePreprocessing
from innerssl.errors import UserError
from innerssl.eval.segmentation_test import run_segmentation_test
from innerssl.outputs.per_image import PER_IMAGE_FOLDER, write_image

SHAPE_IJK = (6, 8, 10)
PERMUTED = np.array([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, -1.0, 3.0], [3.0, 0.0, 0.0, -2.0], [0.0, 0.0, 0.0, 1.0]])
"""i -> S (3 mm), j -> R (2 mm), k -> P (1 mm): RAS needs a permutation and a flip."""
MAPPING = {0: 0, 1: 1, 2: 2}


def write_dataset(root: Path, images: list[np.ndarray], labels: list[np.ndarray] | None, affine: np.ndarray) -> Path:
    """A Decathlon layout (imagesTr, labelsTr) of NIfTI volumes given in NIfTI (i, j, k) order."""
    (root / "imagesTr").mkdir(parents=True)
    for index, image in enumerate(images):
        nibabel.save(nibabel.Nifti1Image(image, affine), root / "imagesTr" / f"case_{index}.nii.gz")
    if labels is not None:
        (root / "labelsTr").mkdir()
        for index, label in enumerate(labels):
            nibabel.save(nibabel.Nifti1Image(label, affine), root / "labelsTr" / f"case_{index}.nii.gz")
    return root


def load(root: Path, preprocessing: VolumePreprocessing | None, normalisation: str = "div") -> list[LoadedImage]:
    layout = find_layout(root, 3, 0.0, 0.0, 0)
    kind = "labels" if (root / "labelsTr").is_dir() else "none"
    mapping = MAPPING if kind == "labels" else None
    return load_split(layout, "train", Normalisation(normalisation), kind, mapping, preprocessing=preprocessing)


def unique_volume() -> np.ndarray:
    """uint16 (i, j, k) with every voxel's value distinct, so a value finds its voxel after any reordering."""
    return (np.arange(np.prod(SHAPE_IJK)).reshape(SHAPE_IJK) + 1).astype(np.uint16)


def label_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 3, SHAPE_IJK).astype(np.uint8)


def world_of_values(volume: np.ndarray, affine: np.ndarray) -> dict[float, np.ndarray]:
    """Value -> world position of its voxel, for a volume in NIfTI (i, j, k) order."""
    indices = np.indices(volume.shape).reshape(3, -1)
    world = (affine[:3, :3] @ indices + affine[:3, 3:]).T
    return dict(zip(volume.reshape(-1).tolist(), world))


def test_orientation_reorders_axes_and_keeps_every_voxels_world_position(tmp_path):
    source = unique_volume()
    root = write_dataset(tmp_path / "data", [source], None, PERMUTED)
    (loaded,) = load(root, VolumePreprocessing(orientation="ras"))
    assert loaded.geometry is not None and nibabel.aff2axcodes(loaded.geometry.affine) == ("R", "A", "S")
    # innerssl's (z, y, x) = (k, j, i): back to (i, j, k) to use the affine
    oriented = np.round(loaded.image[0].numpy().transpose(2, 1, 0) * 65535).astype(np.int64)
    assert oriented.shape == (SHAPE_IJK[1], SHAPE_IJK[2], SHAPE_IJK[0])  # R from j, A from k, S from i
    before, after = world_of_values(source, PERMUTED), world_of_values(oriented, loaded.geometry.affine)
    assert before.keys() == after.keys()
    assert all(np.allclose(before[value], after[value]) for value in before)


def test_spacing_resamples_each_axis_by_its_factor_and_labels_stay_integer(tmp_path):
    images = [np.random.default_rng(1).random((8, 10, 12)).astype(np.float32)]
    labels = [np.random.default_rng(2).integers(0, 3, (8, 10, 12)).astype(np.uint8)]
    root = write_dataset(tmp_path / "data", images, labels, np.eye(4))
    (loaded,) = load(root, VolumePreprocessing(spacing=(2.0, 1.0, 0.5)))  # x, y, z in mm
    z, y, x = loaded.image.shape[1:]
    # MONAI keeps the extent: (n - 1) * old / new + 1 voxels per axis
    assert (z, y, x) == (23, 10, 4)
    assert np.allclose(np.diag(loaded.geometry.affine)[:3], (2.0, 1.0, 0.5))
    assert loaded.target is not None and loaded.target.dtype == torch.int64
    assert loaded.target.shape == (z, y, x) and set(loaded.target.unique().tolist()) <= {0, 1, 2}


def test_the_window_maps_its_ends_to_0_and_1_and_clips(tmp_path):
    values = np.array([-100.0, -57.0, 53.5, 164.0, 300.0], dtype=np.float32)
    volume = np.broadcast_to(values[:, None, None], (5, 2, 2)).astype(np.float32)
    root = write_dataset(tmp_path / "data", [volume], None, np.eye(4))
    (loaded,) = load(root, VolumePreprocessing(intensity_window=(-57, 164)))
    assert torch.allclose(loaded.image[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert loaded.geometry is not None and loaded.geometry.operations == ()


def test_the_foreground_crop_removes_the_zero_border_exactly_with_its_margin(tmp_path):
    image = np.zeros(SHAPE_IJK, np.uint8)
    image[1:4, 2:7, 3:9] = np.random.default_rng(3).integers(1, 255, (3, 5, 6))
    labels = np.zeros(SHAPE_IJK, np.uint8)
    labels[2, 3, 4] = 2
    root = write_dataset(tmp_path / "data", [image], [labels], np.eye(4))
    (whole,) = load(root, None)
    (cropped,) = load(root, VolumePreprocessing(crop_foreground=True))
    # (z, y, x) = (k, j, i): the box is [3:9, 2:7, 1:4]
    assert torch.equal(cropped.image, whole.image[:, 3:9, 2:7, 1:4])
    assert torch.equal(cropped.target, whole.target[3:9, 2:7, 1:4])
    (margin,) = load(root, VolumePreprocessing(crop_foreground=True, crop_margin=2))
    assert torch.equal(margin.image, whole.image[:, 1:10, 0:8, 0:6])  # widened, within the volume


def test_padding_reaches_the_patch_size_on_the_short_axes_only(tmp_path):
    root = write_dataset(tmp_path / "data", [unique_volume()], [label_volume()], np.eye(4))
    (whole,) = load(root, None)
    (padded,) = load(root, VolumePreprocessing(pad_to=(12, 4, 9)))
    assert padded.image.shape == (1, 12, 8, 9) and padded.target.shape == (12, 8, 9)
    assert torch.equal(padded.image[:, 1:11, :, 1:7], whole.image)  # symmetric: 1 before, 1 after
    assert float(padded.image[:, 0].abs().max()) == 0.0 and torch.equal(padded.target[1:11, :, 1:7], whole.target)


def test_2d_images_take_the_window_the_crop_and_the_padding(tmp_path):
    image = np.full((6, 9), -100.0, np.float32)  # below the window: 0, the minimum
    image[1:5, 2:6] = np.linspace(0, 164, 16, dtype=np.float32).reshape(4, 4)
    (tmp_path / "data" / "images").mkdir(parents=True)
    tifffile.imwrite(tmp_path / "data" / "images" / "a.tif", image)
    layout = find_layout(tmp_path / "data", 2, 0.0, 0.0, 0)
    steps = VolumePreprocessing(spatial_dims=2, intensity_window=(-57, 164), crop_foreground=True, pad_to=(6, 4))
    (loaded,) = load_split(layout, "train", Normalisation(), "none", preprocessing=steps)
    assert loaded.image.shape == (1, 6, 4)  # the 4 x 4 box, padded by one row each side
    assert torch.allclose(loaded.image[0, 1:5], torch.from_numpy((image[1:5, 2:6] + 57) / 221))
    assert float(loaded.image[0, 0].abs().max()) == 0.0
    assert loaded.geometry is not None
    assert loaded.geometry.restore(loaded.image, labels=False).shape == (1, 6, 9)


def test_defaults_off_load_bit_identical_arrays(tmp_path):
    root = write_dataset(tmp_path / "data", [unique_volume()], [label_volume()], PERMUTED)
    container = SegmentationContainer()
    assert not container.preprocessing().active
    for normalisation in ("div", "percentile", "zero_mean_unit_variance"):
        (plain,) = load(root, None, normalisation)
        (off,) = load(root, container.preprocessing(), normalisation)
        assert off.geometry is None and plain.geometry is None
        assert torch.equal(off.image, plain.image) and off.image.dtype == plain.image.dtype
        assert torch.equal(off.target, plain.target) and off.target.dtype == plain.target.dtype


def test_a_written_prediction_is_back_in_the_source_grid_with_its_affine(tmp_path):
    source, labels = unique_volume(), label_volume()
    labels[:, :, :2] = 0
    root = write_dataset(tmp_path / "data", [source], [labels], PERMUTED)
    steps = VolumePreprocessing(orientation="RAS", crop_foreground=True, pad_to=(12, 12, 12))
    (loaded,) = load(root, steps)
    assert loaded.image.shape == (1, 12, 12, 12)
    predictions = {id(loaded.image): loaded.target}  # a perfect segmenter: the written map is the source's labels
    module = SimpleNamespace(
        spec=SimpleNamespace(spatial_dims=3),
        to=lambda device: module,
        eval=lambda: module,
        predict_labels=lambda image: predictions[id(image)],
        dice_of=lambda predicted, target: {1: 1.0, 2: 1.0},
    )
    run_segmentation_test(module, [loaded], tmp_path / "run", torch.device("cpu"))  # type: ignore[arg-type]
    written = nibabel.load(tmp_path / "run" / PER_IMAGE_FOLDER / "case_0.nii.gz")
    assert written.shape == SHAPE_IJK and np.array_equal(written.affine, PERMUTED)
    assert np.array_equal(np.asarray(written.dataobj), labels)
    # through spacing too: resampled back (nearest), in the source's shape
    (resampled,) = load(root, VolumePreprocessing(orientation="RAS", spacing=(1.0, 1.0, 1.0)))
    restored = resampled.geometry.restore(resampled.image, labels=False)
    assert restored.shape == (1, *SHAPE_IJK[::-1])
    path = write_image(restored, tmp_path / "restored", "case_0", ".nii.gz", 3, reference=resampled.source)
    assert nibabel.load(path).shape == SHAPE_IJK and np.array_equal(nibabel.load(path).affine, PERMUTED)
    back = resampled.geometry.restore(resampled.target, labels=True)
    assert back.dtype == torch.int64 and back.shape == SHAPE_IJK[::-1]


def test_orientation_needs_nifti_volumes(tmp_path):
    for folder in ("imagesTr", "labelsTr"):
        (tmp_path / "data" / folder).mkdir(parents=True)
        tifffile.imwrite(tmp_path / "data" / folder / "a.tif", label_volume(), metadata={"axes": "ZYX"}, imagej=True)
    with pytest.raises(UserError, match="--orientation and --spacing need each volume's affine.*a.tif"):
        load(tmp_path / "data", VolumePreprocessing(orientation="RAS"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"orientation": "RAX"}, r"--orientation=RAX must be 3 letters, one from each of L/R, A/P and S/I"),
        ({"orientation": "RRS"}, r"--orientation=RRS must be 3 letters"),
        ({"spacing": "1,2"}, r"--spacing=1,2 needs 1 or 3 positive voxel sizes"),
        ({"spacing": "1,0,1"}, r"--spacing=1,0,1 needs 1 or 3 positive"),
        ({"intensity_window": "5,1"}, r"--intensity_window=5,1 needs two intensities low,high with low < high"),
        ({"intensity_window": "5"}, r"--intensity_window=5 needs two"),
        ({"spatial_dims": "2", "patch_size": "32", "orientation": "RAS"}, r"--orientation needs .*--spatial_dims=3"),
        ({"spatial_dims": "2", "patch_size": "32", "spacing": "1"}, r"--spacing needs .*--spatial_dims=3"),
        ({"intensity_window": "-57,164", "normalisation": "percentile"}, r"replacing --normalisation: drop"),
        ({"intensity_window": "-57,164", "normalisation": "div", "config": ""}, r"replacing --normalisation: drop"),
        ({"intensity_window": "-57,164", "percentile_clip": "1,99", "config": ""}, r"replacing --percentile_clip"),
        ({"crop_margin": "2"}, r"--crop_margin=2 only applies with --crop_foreground"),
    ],
)
def test_bad_preprocessing_flags_are_refused_in_one_line_naming_the_flag(flags, message):
    flags = dict(flags)
    container = Hippocampus_Segmentation() if flags.pop("config", None) is not None else SegmentationContainer()
    container.apply_flags({"spatial_dims": "3", "patch_size": "16", **flags})
    with pytest.raises(UserError, match=message) as error:
        container.validate(check_this_machine=False)
    assert "\n" not in str(error.value)


def test_a_window_replaces_the_configs_own_normalisation():
    container = Hippocampus_Segmentation()  # normalisation=percentile is the config's
    container.apply_flags({"intensity_window": "-57,164", "spacing": "1.5", "pad_to_patch": "true"})
    container.validate(check_this_machine=False)
    steps = container.preprocessing()
    assert steps.intensity_window == (-57.0, 164.0) and steps.spacing == (1.5, 1.5, 1.5)
    assert steps.pad_to == (32, 32, 32)
    anisotropic = Hippocampus_Segmentation()
    anisotropic.apply_flags({"spacing": "2,1.5,1"})  # z,y,x as --patch_size
    assert anisotropic.preprocessing().spacing == (1.0, 1.5, 2.0)  # MONAI's pixdim x,y,z
    assert "spacing 2,1.5,1 mm (z,y,x)" in anisotropic.preprocessing().describe()
    assert "--intensity_window" in SegmentationContainer.help_text() and "--pad_to_patch" in container.help_text()
