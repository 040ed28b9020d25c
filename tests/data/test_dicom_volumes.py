"""DICOM volumes (--spatial_dims=3): series folders ordered by position, multi-frame files, modality values, the
affine, one-volume checks, bad slices, and series folders as samples of the folder layouts."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, generate_uid

from innerssl.data.biapy_layout import list_image_files, probe_image, read_image
from innerssl.data.datasets.base import BadFileLog
from innerssl.data.image_layouts import find_layout
from innerssl.errors import BadImageFile, UserError

SIZE = 8
SPACING = (0.5, 0.75)
"""PixelSpacing: between rows (y), then between columns (x)."""
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
ORIGIN = (-20.0, -30.0)
SLICE_STEP = 2.5
SLOPE, INTERCEPT = 2.0, -1024.0


def stored_slice(index: int) -> np.ndarray:
    """Slice ``index``'s stored values: unique per slice and pixel, so order and layout show in the values."""
    return (np.arange(SIZE * SIZE, dtype=np.uint16).reshape(SIZE, SIZE) + 100 * index).astype(np.uint16)


def dataset(pixels: np.ndarray, sop_class: str = CTImageStorage, **elements: object) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.set_pixel_data(pixels, photometric_interpretation="MONOCHROME2", bits_stored=16)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def write_series(
    folder: Path,
    count: int = 5,
    series: str | None = None,
    rescale: bool = True,
    orientation: tuple[float, ...] = AXIAL,
    position: object = None,
) -> Path:
    """``count`` slices whose file names and InstanceNumbers are shuffled against their positions: slice k (values
    ``stored_slice(k)``) lies at ``position(k)`` (default: z = 10 + k * SLICE_STEP)."""
    folder.mkdir(parents=True, exist_ok=True)
    series = series or generate_uid()
    rng = np.random.default_rng(7)
    order, instances = rng.permutation(count), rng.permutation(count) + 1
    for k in range(count):
        where = position(k) if callable(position) else (*ORIGIN, 10.0 + k * SLICE_STEP)
        elements: dict[str, object] = dict(
            SeriesInstanceUID=series,
            ImagePositionPatient=list(where),
            ImageOrientationPatient=list(orientation),
            PixelSpacing=list(SPACING),
            SliceThickness=SLICE_STEP,
            InstanceNumber=int(instances[k]),  # shuffled: positions, not instance numbers, decide
        )
        if rescale:
            elements.update(RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT)
        dataset(stored_slice(k), **elements).save_as(folder / f"IM{order[k]:04d}.dcm", enforce_file_format=True)
    return folder


def test_series_folder_is_ordered_by_position_and_holds_modality_values(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "series", count=5)
    pixels, info = read_image(folder, 3)
    assert pixels.shape == (1, 5, SIZE, SIZE) and pixels.dtype == np.float32
    expected = np.stack([stored_slice(k) * SLOPE + INTERCEPT for k in range(5)]).astype(np.float32)
    np.testing.assert_array_equal(pixels[0], expected)
    assert (info.shape, info.dtype, info.dtype_max, info.axes) == ((1, 5, SIZE, SIZE), np.float32, None, "ZYX")
    assert probe_image(folder, 3) == info


def test_series_affine_maps_z_y_x_to_ras_millimetres(tmp_path: Path) -> None:
    info = probe_image(write_series(tmp_path / "series", count=4), 3)
    expected = np.array(
        [
            [0.0, 0.0, -SPACING[1], -ORIGIN[0]],  # LPS -> RAS: x and y negated
            [0.0, -SPACING[0], 0.0, -ORIGIN[1]],
            [SLICE_STEP, 0.0, 0.0, 10.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    assert info.affine is not None
    np.testing.assert_allclose(np.array(info.affine), expected, atol=1e-9)


def test_sagittal_series_is_ordered_along_its_normal(tmp_path: Path) -> None:
    """Sagittal slices share one z: the order comes from the normal (row x column = (-1, 0, 0)), so the slice with
    the largest x comes first, as ITK / GDCM order them."""
    sagittal = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    folder = write_series(tmp_path / "sag", count=4, orientation=sagittal, position=lambda k: (5.0 * k, 0.0, 0.0))
    pixels, info = read_image(folder, 3)
    expected = np.stack([stored_slice(k) * SLOPE + INTERCEPT for k in (3, 2, 1, 0)])
    np.testing.assert_array_equal(pixels[0], expected)
    assert info.affine is not None
    np.testing.assert_allclose(np.array(info.affine)[:3, 0], [5.0, 0.0, 0.0])  # z steps -5 mm in L, +5 in R


def test_series_without_rescale_keeps_the_stored_integers(tmp_path: Path) -> None:
    pixels, info = read_image(write_series(tmp_path / "series", count=3, rescale=False), 3)
    assert pixels.dtype == np.uint16 and (info.dtype, info.dtype_max) == (np.uint16, 65535.0)
    np.testing.assert_array_equal(pixels[0], np.stack([stored_slice(k) for k in range(3)]))


def test_multi_frame_file_is_a_volume_in_stored_frame_order(tmp_path: Path) -> None:
    frames = np.stack([stored_slice(k) for k in (2, 0, 3, 1)])
    path = tmp_path / "mf.dcm"
    dataset(frames, NumberOfFrames=4, RescaleSlope=SLOPE, RescaleIntercept=INTERCEPT).save_as(
        path, enforce_file_format=True
    )
    pixels, info = read_image(path, 3)
    assert pixels.shape == (1, 4, SIZE, SIZE) and info.dtype_max is None
    np.testing.assert_array_equal(pixels[0], frames * SLOPE + INTERCEPT)
    assert info.affine is None  # no position in the header
    assert probe_image(path, 3) == info


def test_enhanced_multi_frame_uses_per_frame_rescale_and_positions(tmp_path: Path) -> None:
    frames = np.stack([stored_slice(k) for k in range(3)])
    per_frame = []
    for k in range(3):
        item = Dataset()
        position, transform = Dataset(), Dataset()
        position.ImagePositionPatient = [*ORIGIN, 4.0 * k]
        transform.RescaleSlope, transform.RescaleIntercept = k + 1, -k
        item.PlanePositionSequence = Sequence([position])
        item.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(item)
    shared, orientation, measures = Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = list(AXIAL)
    measures.PixelSpacing = list(SPACING)
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds = dataset(frames, EnhancedCTImageStorage, NumberOfFrames=3)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    pixels, info = read_image(path, 3)
    np.testing.assert_array_equal(pixels[0], np.stack([frames[k] * (k + 1.0) - k for k in range(3)]))
    assert info.affine is not None
    np.testing.assert_allclose(np.array(info.affine)[:3, 0], [0.0, 0.0, 4.0])
    np.testing.assert_allclose(np.array(info.affine)[:3, 3], [-ORIGIN[0], -ORIGIN[1], 0.0])


def test_two_dimensional_runs_keep_refusing_volumes(tmp_path: Path) -> None:
    path = tmp_path / "mf.dcm"
    dataset(np.stack([stored_slice(0), stored_slice(1)]), NumberOfFrames=2).save_as(path, enforce_file_format=True)
    with pytest.raises(BadImageFile, match="multi-frame"):
        probe_image(path, 2)
    with pytest.raises(BadImageFile, match="multi-frame"):
        read_image(path, 2)
    with pytest.raises(BadImageFile, match="is a directory"):
        read_image(write_series(tmp_path / "series", count=2), 2)


def test_single_frame_file_is_refused_as_a_volume(tmp_path: Path) -> None:
    path = tmp_path / "slice.dcm"
    dataset(stored_slice(0)).save_as(path, enforce_file_format=True)
    with pytest.raises(UserError, match=r"single-frame \(2D\) DICOM image but --spatial_dims=3: put the slices") as e:
        probe_image(path, 3)
    assert not isinstance(e.value, BadImageFile)


def test_folder_with_two_series_is_refused(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "mixed", count=3)
    dataset(
        stored_slice(9),
        SeriesInstanceUID=generate_uid(),
        ImagePositionPatient=[0, 0, 99],
        ImageOrientationPatient=list(AXIAL),
    ).save_as(folder / "other.dcm", enforce_file_format=True)
    with pytest.raises(UserError, match=r"mixed holds two series .*other\.dcm.*put each series in its own folder"):
        probe_image(folder, 3)


def test_folder_with_slices_of_different_sizes_is_refused(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "sizes", count=3)
    series = str(dataset_of(folder).SeriesInstanceUID)
    dataset(
        np.zeros((4, SIZE), np.uint16),
        SeriesInstanceUID=series,
        ImagePositionPatient=[0, 0, 99],
        ImageOrientationPatient=list(AXIAL),
    ).save_as(folder / "small.dcm", enforce_file_format=True)
    with pytest.raises(UserError, match=r"slices of different sizes: .*small\.dcm \(8x8 vs 4x8\)"):
        read_image(folder, 3)


def test_two_slices_at_one_position_are_refused(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "echoes", count=3, position=lambda k: (0.0, 0.0, float(min(k, 1))))
    with pytest.raises(UserError, match="two slices at one position"):
        probe_image(folder, 3)


def dataset_of(folder: Path) -> Dataset:
    import pydicom

    return pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])


def test_broken_slice_makes_the_series_a_bad_file(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "broken", count=4)
    victim = sorted(folder.glob("*.dcm"))[1]
    victim.write_bytes(victim.read_bytes()[:200])  # header cut off
    with pytest.raises(BadImageFile) as caught:
        probe_image(folder, 3)
    assert caught.value.path == folder and f"its slice {victim.name} cannot be read" in caught.value.reason


def test_truncated_pixel_data_is_found_when_read(tmp_path: Path) -> None:
    folder = write_series(tmp_path / "short", count=3)
    victim = sorted(folder.glob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes()[:-40])  # pixel data cut short, header intact
    probe_image(folder, 3)
    with pytest.raises(BadImageFile) as caught:
        read_image(folder, 3)
    assert caught.value.path == folder and victim.name in caught.value.reason


def test_series_folders_are_samples_in_3d_only_and_debris_is_skipped(tmp_path: Path) -> None:
    images = tmp_path / "imagesTr"
    write_series(images / "case_1.2", count=2)  # a dotted folder name is kept whole
    (images / "case_1.2" / "._IM0000.dcm").write_bytes(b"\0\0 AppleDouble")
    write_series(images / "__MACOSX", count=2)
    (images / "notes").mkdir()
    (images / "notes" / "readme.txt").write_text("no DICOM here")
    assert list_image_files(images, 3) == {"case_1.2": images / "case_1.2"}
    assert list_image_files(images, 2) == {}
    assert read_image(images / "case_1.2", 3)[0].shape == (1, 2, SIZE, SIZE)  # the ._ file is not a slice


def test_decathlon_folder_of_series_with_a_bad_one_skipped_and_counted(tmp_path: Path) -> None:
    root = tmp_path / "Task"
    for index in range(4):
        write_series(root / "imagesTr" / f"case_{index}", count=3)
        label = np.zeros((SIZE, SIZE, 3), np.uint8)  # NIfTI (i, j, k) = (x, y, z)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        nibabel.save(nibabel.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"case_{index}.nii.gz")
    broken = sorted((root / "imagesTr" / "case_2").glob("*.dcm"))[0]
    broken.write_bytes(b"not dicom at all")
    log = tmp_path / "bad_files.txt"
    layout = find_layout(root, 3, val_fraction=0, test_fraction=0, seed=0, bad_file_log=BadFileLog(log))
    assert [sample.name for sample in layout.splits["train"]] == ["case_0", "case_1", "case_3"]
    assert list(layout.bad_files) == [root / "imagesTr" / "case_2"]
    assert log.read_text().splitlines()[0].startswith(f"{root / 'imagesTr' / 'case_2'}\tits slice ")
    assert layout.infos[root / "imagesTr" / "case_0"].spatial_shape == (3, SIZE, SIZE)


def test_nifti_volumes_carry_their_affine_in_output_axis_order(tmp_path: Path) -> None:
    affine = np.array([[2.0, 0, 0, -5], [0, 3.0, 0, -6], [0, 0, 4.0, -7], [0, 0, 0, 1]])
    path = tmp_path / "v.nii.gz"
    nibabel.save(nibabel.Nifti1Image(np.zeros((5, 6, 7), np.uint8), affine), path)
    info = probe_image(path, 3)
    assert info.spatial_shape == (7, 6, 5)
    np.testing.assert_allclose(np.array(info.affine), affine[:, [2, 1, 0, 3]])


def test_predictions_of_a_series_are_nifti_in_its_world_coordinates(tmp_path: Path) -> None:
    import nibabel

    from innerssl.data.biapy_layout import probe_image
    from innerssl.runner import main

    root = tmp_path / "series"
    for name in ("a", "b", "c", "d"):
        write_series(root / f"patient_{name}", count=8)
    flags = [
        "--model=Hippocampus_Crappify",
        f"--local_dataset={root}",
        f"--output_dir={tmp_path / 'outputs'}",
        "--run_name=run",
        "--max_num_gpus=0",
        "--num_workers=0",
        "--num_epochs=1",
        "--patches_per_image=1",
        "--batch_size=2",
        "--patch_size=8",
        "--network_options=channels=8x16,strides=2",
        "--val_fraction=0.3",
        "--test_fraction=0.25",
        "--test_padding=0",
    ]
    assert main(flags) == 0
    (written,) = sorted((tmp_path / "outputs" / "Hippocampus_Crappify" / "run" / "per_image").iterdir())
    assert written.name.endswith(".nii.gz")
    source = probe_image(root / written.name.removesuffix(".nii.gz"), 3)
    assert source.affine is not None
    image = nibabel.load(written)
    assert image.shape == (SIZE, SIZE, 8)  # NIfTI (x, y, z)
    np.testing.assert_allclose(image.affine, np.asarray(source.affine)[:, [2, 1, 0, 3]])
