"""DICOM decoding: exact pixels for every encoding of the shared real files, intensity steps, clear errors,
and no patient data in messages or logs."""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from innerssl.data.dicom import dicom_summary, read_dicom_image, read_dicom_pixels
from innerssl.errors import BadImageFile

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DICOM_DIR = SHARED_DATA / "dicom"
MANIFEST = DICOM_DIR / "MANIFEST.csv"
NO_SHARED_DATA = f"shared test data not found at {SHARED_DATA} (it lies beside the checkout in CI)"
UNSUPPORTED_SYNTAXES = {
    "ct-slice-many-syntaxes/JPEGProcess6_8TransferSyntax_1.2.840.10008.1.2.4.53.dcm": "1.2.840.10008.1.2.4.53",
    "ct-slice-many-syntaxes/JPEGProcess10_12TransferSyntax_1.2.840.10008.1.2.4.55.dcm": "1.2.840.10008.1.2.4.55",
}
CORRUPT_FILE = "chest/966.dcm"
MONOCHROME1_FILE = "chest/RG1_UNCR.dcm"
SMALL_REAL_FILE = "mr-slice-9-syntaxes/1.dcm"
SECRETS = {
    "PatientName": "Zqxprivacy^Testpatient",
    "PatientID": "ZQX-4242-ID",
    "InstitutionName": "Zqxmemorial Hospital",
    "PatientBirthDate": "19010203",
}


def manifest_rows() -> list[dict[str, str]]:
    if not MANIFEST.is_file():
        return []
    with open(MANIFEST, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def manifest_params(keep: bool | None = None, groups: tuple[str, ...] = ()) -> list:
    """One pytest param per manifest file (filtered by 'decodes' and group), or one skipped param without data."""
    rows = [
        row
        for row in manifest_rows()
        if (keep is None or (row["decodes"] == "True") == keep) and (not groups or row["group"] in groups)
    ]
    if not rows:
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_SHARED_DATA))]
    return [pytest.param(row, id=row["file"]) for row in rows]


def pixel_hash(pixels: np.ndarray) -> str:
    """The manifest's pixel_sha256_16: sha256 over the values as little-endian int64, first 16 hex digits."""
    return hashlib.sha256(np.asarray(pixels).astype("<i8").tobytes()).hexdigest()[:16]


@pytest.fixture
def dicom_dir() -> Path:
    if not MANIFEST.is_file():
        pytest.skip(NO_SHARED_DATA)
    return DICOM_DIR


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **elements):
    """A minimal explicit VR little endian secondary-capture file with ``pixels`` and extra header elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits_stored)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path


# --- the shared real files ------------------------------------------------------------------------------


@pytest.mark.parametrize("row", manifest_params(keep=True))
def test_decodable_file_has_the_manifest_pixels(row: dict[str, str]) -> None:
    pixels = read_dicom_pixels(DICOM_DIR / row["file"])
    assert "x".join(str(size) for size in pixels.shape) == row["shape"]
    assert pixel_hash(pixels) == row["pixel_sha256_16"]


@pytest.mark.parametrize("row", manifest_params(keep=True, groups=("mr-slice-9-syntaxes", "ct-slice-many-syntaxes")))
def test_image_is_float32_in_unit_range(row: dict[str, str]) -> None:
    image = read_dicom_image(DICOM_DIR / row["file"])
    assert image.dtype == np.float32
    assert image.shape == tuple(int(size) for size in row["shape"].split("x"))
    assert 0.0 <= image.min() < image.max() <= 1.0


def test_files_with_identical_pixels_give_identical_images(dicom_dir: Path) -> None:
    """Same pixels and same intensity header, different encoding (incl. big endian) -> the very same image."""
    files = [row["file"] for row in manifest_rows() if row["group"] == "mr-slice-9-syntaxes"]
    reference = read_dicom_image(dicom_dir / files[0])
    for file in files[1:]:
        np.testing.assert_array_equal(read_dicom_image(dicom_dir / file), reference, err_msg=file)


@pytest.mark.parametrize("file", sorted(UNSUPPORTED_SYNTAXES))
def test_unsupported_transfer_syntax_is_named(dicom_dir: Path, file: str) -> None:
    path = dicom_dir / file
    syntax = pydicom.uid.UID(UNSUPPORTED_SYNTAXES[file])
    with pytest.raises(BadImageFile) as caught:
        read_dicom_image(path)
    message = str(caught.value)
    assert caught.value.path == path
    assert syntax in message and syntax.name in message
    assert "\n" not in message


def test_corrupt_file_gives_bad_image_file(dicom_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = dicom_dir / CORRUPT_FILE
    with caplog.at_level(logging.DEBUG), pytest.raises(BadImageFile) as caught:
        read_dicom_image(path)
    assert caught.value.path == path
    assert "corrupt" in caught.value.reason and "JPEG 2000" in caught.value.reason
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]


def test_monochrome1_is_inverted(dicom_dir: Path) -> None:
    path = dicom_dir / MONOCHROME1_FILE
    stride = 7  # a subsample is plenty for a correlation and keeps the test quick
    stored = read_dicom_pixels(path).ravel()[::stride].astype(np.float64)
    for apply_voi_lut in (True, False):
        image = read_dicom_image(path, apply_voi_lut=apply_voi_lut).ravel()[::stride]
        assert np.corrcoef(stored, image)[0, 1] < -0.99


def test_header_window_that_misses_the_pixels_is_ignored(dicom_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """This real DX file's window (2725/5310) lies below all its pixels (>= 32744): applying it would be white."""
    with caplog.at_level(logging.DEBUG, logger="innerssl.data.dicom"):
        image = read_dicom_image(dicom_dir / "chest/JPEG2KLossless_1s_1f_u_16_16.dcm")
    assert image.std() > 0.01
    assert any("window" in record.getMessage() for record in caplog.records)


def test_summary_is_technical_only(dicom_dir: Path) -> None:
    summary = dicom_summary(dicom_dir / MONOCHROME1_FILE)
    assert summary["photometric_interpretation"] == "MONOCHROME1"
    assert summary["transfer_syntax_uid"] == "1.2.840.10008.1.2.1"
    assert (summary["rows"], summary["columns"], summary["bits_stored"]) == (1955, 1841, 15)
    assert not {"PatientName", "PatientID", "InstitutionName"} & set(summary)


# --- privacy ------------------------------------------------------------------------------------------


def private_copy(source: Path, target: Path, truncate_pixels: bool = False) -> Path:
    """``source`` with distinctive identifying values and an over-long Other Patient IDs (pydicom warns about
    it whenever the header is walked), optionally with half its pixel data cut off."""
    ds = pydicom.dcmread(source)
    for keyword, value in SECRETS.items():
        setattr(ds, keyword, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.OtherPatientIDs = SECRETS["PatientID"] + "-" + "9" * 70
        if truncate_pixels:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
        ds.save_as(target)
    return target


def assert_no_secrets(text: str) -> None:
    for value in [*SECRETS.values(), "Zqxprivacy", "Testpatient", "Zqxmemorial"]:
        assert value not in text


def test_no_patient_data_in_errors_or_logs(dicom_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = private_copy(dicom_dir / SMALL_REAL_FILE, tmp_path / "private.dcm", truncate_pixels=True)
    caplog.clear()  # only what reading logs counts
    with caplog.at_level(logging.DEBUG), pytest.raises(BadImageFile) as caught:
        read_dicom_image(path)
    assert "truncated" in caught.value.reason
    assert_no_secrets(str(caught.value))
    assert_no_secrets(repr(dicom_summary(path)))
    assert_no_secrets(caplog.text)
    # pydicom warns about the over-long ID while the header is walked; its log records quote header
    # values in general, so none may escape a read
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]


def test_decoder_message_quoting_header_values_is_scrubbed(
    dicom_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = private_copy(dicom_dir / SMALL_REAL_FILE, tmp_path / "private.dcm")

    def leaky_decoder(self: Dataset) -> np.ndarray:
        raise RuntimeError(f"cannot decode the image of {self.PatientName} ({self.PatientID}, {self.InstitutionName})")

    monkeypatch.setattr(Dataset, "pixel_array", property(leaky_decoder))
    caplog.clear()
    with caplog.at_level(logging.DEBUG), pytest.raises(BadImageFile) as caught:
        read_dicom_image(path)
    assert "[redacted]" in caught.value.reason
    assert_no_secrets(str(caught.value))
    assert_no_secrets(caplog.text)


# --- intensity steps on small synthetic files -----------------------------------------------------------


def test_window_is_applied_with_its_output_range(tmp_path: Path) -> None:
    stored = np.array([[0, 1000, 2000, 3000, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "window.dcm", stored, WindowCenter=2000, WindowWidth=2001)
    # LINEAR window (PS3.3 C.11.2.1.2.1): ((x - (c - 0.5)) / (w - 1) + 0.5) between c - w/2 and c + w/2
    expected = np.clip((stored - 1999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(read_dicom_image(path), expected, atol=1e-6)
    np.testing.assert_allclose(read_dicom_image(path, apply_voi_lut=False), stored / 4095, atol=1e-6)


def test_without_window_the_bit_depth_sets_the_range(tmp_path: Path) -> None:
    stored = np.array([[0, 100], [2048, 4095]], dtype=np.uint16)  # not a min-max stretch: 100 stays dark
    image = read_dicom_image(write_dicom(tmp_path / "plain.dcm", stored))
    assert image.dtype == np.float32
    np.testing.assert_allclose(image, stored / 4095, atol=1e-6)


def test_rescale_and_signed_pixels(tmp_path: Path) -> None:
    stored = np.array([[-2000, 0], [1024, 3000]], dtype=np.int16)
    path = write_dicom(tmp_path / "ct.dcm", stored, bits_stored=16, RescaleSlope=1, RescaleIntercept=-1024)
    low, high = -(2**15) - 1024, 2**15 - 1 - 1024  # the signed 16-bit range, rescaled
    expected = (stored.astype(np.float64) - 1024 - low) / (high - low)
    np.testing.assert_allclose(read_dicom_image(path), expected, atol=1e-6)
    windowed = write_dicom(
        tmp_path / "ctw.dcm", stored, bits_stored=16, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40,
        WindowWidth=400,
    )  # fmt: skip
    hounsfield = stored.astype(np.float64) - 1024
    np.testing.assert_allclose(read_dicom_image(windowed), np.clip((hounsfield - 39.5) / 399 + 0.5, 0, 1), atol=1e-6)


def test_voi_lut_sequence_output_range_comes_from_its_entries(tmp_path: Path) -> None:
    """A LUT whose descriptor says 16 bits but holds values up to 2047 still spans [0, 1]."""
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "US", [value // 2 for value in range(4096)])
    stored = np.array([[0, 2048, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "lut.dcm", stored, VOILUTSequence=[item])
    np.testing.assert_allclose(read_dicom_image(path), [[0.0, 1024 / 2047, 1.0]], atol=1e-6)


def test_synthetic_monochrome1_is_inverted(tmp_path: Path) -> None:
    stored = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1")
    np.testing.assert_allclose(read_dicom_image(path), [[1.0, 0.0]])


def test_invalid_window_falls_back_to_bit_depth(tmp_path: Path) -> None:
    stored = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(tmp_path / "w0.dcm", stored, WindowCenter=100, WindowWidth=0)
    np.testing.assert_allclose(read_dicom_image(path), [[0.0, 1.0]])


def test_rgb_and_palette_and_ybr_become_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((4, 5, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    image = read_dicom_image(write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8))
    assert image.shape == (4, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[0, 0], [1.0, 0.0, 0.0])
    for name in ("examples_palette.dcm", "SC_ybr_full_422_uncompressed.dcm"):  # bundled with pydicom
        image = read_dicom_image(Path(get_testdata_file(name)))
        assert image.ndim == 3 and image.shape[-1] == 3 and image.dtype == np.float32
        assert 0.0 <= image.min() < image.max() <= 1.0


def test_file_without_preamble_is_read(tmp_path: Path) -> None:
    stored = np.array([[0, 4095]], dtype=np.uint16)
    ds = pydicom.dcmread(write_dicom(tmp_path / "with.dcm", stored))
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "without.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=False, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_allclose(read_dicom_image(path), [[0.0, 1.0]])


# --- files that cannot become one 2D image ----------------------------------------------------------


def test_multi_frame_file_is_rejected(tmp_path: Path) -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = write_dicom(tmp_path / "cine.dcm", frames)
    with pytest.raises(BadImageFile, match="multi-frame .* 3 frames.* single-frame"):
        read_dicom_image(path)


def test_single_frame_with_number_of_frames_is_read(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "one.dcm", np.zeros((1, 4, 5), dtype=np.uint16))
    assert read_dicom_image(path).shape == (4, 5)


def test_non_dicom_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "note.dcm"
    path.write_text("not a DICOM file at all, just some text " * 20)
    with pytest.raises(BadImageFile, match="not a DICOM file"):
        read_dicom_image(path)


def test_missing_pixel_data_is_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopixels.dcm", np.zeros((4, 5), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(BadImageFile, match="no pixel data"):
        read_dicom_image(path)


def test_truncated_native_pixel_data_is_rejected(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "short.dcm", np.zeros((64, 64), dtype=np.uint16))
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:100]
    ds.save_as(path)
    with pytest.raises(BadImageFile, match="Explicit VR Little Endian .*corrupt or truncated"):
        read_dicom_pixels(path)


def test_garbage_compressed_frame_is_rejected(tmp_path: Path) -> None:
    source = get_testdata_file("MR_small_jp2klossless.dcm")
    path = tmp_path / "garbage.dcm"
    shutil.copy(source, path)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])
    ds.save_as(path)
    with pytest.raises(BadImageFile, match="JPEG 2000"):
        read_dicom_image(path)


def test_missing_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BadImageFile, match="file not found"):
        read_dicom_image(tmp_path / "absent.dcm")
