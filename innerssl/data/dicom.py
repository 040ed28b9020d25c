"""DICOM file -> float32 image in [0, 1], bright = dense, with errors a user can act on.

The steps follow the DICOM display pipeline (PS3.4 N.2), done by pydicom 3 and its pylibjpeg plugins:

1. decode the stored pixels (:func:`read_dicom_pixels`; YBR colour comes back as RGB);
2. Modality LUT / Rescale Slope and Intercept, so values mean the same across scanners (HU for CT);
3. VOI LUT or Window Center / Width when present and wanted: the contrast the acquiring site chose;
4. normalise to [0, 1] by a range that comes from the header, never from the image itself, so one
   intensity means the same in every image of a dataset (a per-image min-max would stretch a
   nearly blank image to full contrast). The range is the VOI output range when a VOI was applied,
   otherwise the range Bits Stored / Pixel Representation allow, passed through the rescale.
   Only float pixel data, which has no bit depth, falls back to its own min and max;
5. MONOCHROME1 (bright = low value) is inverted, so bright = dense for every file.

Files that cannot become one 2D image (multi-frame, no pixel data, an unsupported transfer syntax,
corrupt data, not DICOM at all) raise :class:`BadImageFile` with a one-line reason; pydicom's own
exceptions never escape for a file problem, so a dataset skips the file and goes on.

Privacy: headers hold patient names, ids, birth dates and institutions. Nothing here reads those
elements into a message or a return value; pydicom's warnings and log records, which quote header
values (e.g. "Invalid value for VR PN: ..."), are silenced while a file is read; and text taken from
a decoder's exception is scrubbed of the file's identifying values before it goes into a reason.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, apply_windowing, get_decoder
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from innerssl.errors import BadImageFile

logger = logging.getLogger(__name__)

PREAMBLE_LENGTH = 128
"""A DICOM file (PS3.10) starts with a 128-byte preamble followed by the magic bytes below."""
DICOM_MAGIC = b"DICM"
MONOCHROME1 = "MONOCHROME1"
MONOCHROME = (MONOCHROME1, "MONOCHROME2")
RGB_LIKE = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
"""Colour interpretations pydicom (or the JPEG / JPEG 2000 codec) hands back as RGB samples."""
PALETTE_COLOR = "PALETTE COLOR"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MIN_VOI_COVERAGE = 0.01
"""A window / VOI LUT that leaves fewer than this fraction of pixels unsaturated shows nothing: it was
written for other pixel values (e.g. a writer shifted the pixels and kept the old window), so it is
ignored and the bit-depth range is used instead. Real windows, even narrow CT ones, cover far more."""
MAX_DETAIL_CHARS = 300
"""A decoder's own message is quoted in a reason up to this length, to keep reasons one short line."""
REDACTED = "[redacted]"
MIN_REDACTED_LENGTH = 3
"""Shorter identifying values (sex 'F', phone '0') are not scrubbed: they would mangle any text."""
IDENTIFYING_KEYWORDS = frozenset(
    {
        "PatientName",
        "PatientID",
        "OtherPatientIDs",
        "IssuerOfPatientID",
        "PatientBirthDate",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "MedicalRecordLocator",
        "AccessionNumber",
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "StationName",
        "DeviceSerialNumber",
        "StudyID",
        "ReferringPhysicianName",
        "PerformingPhysicianName",
        "OperatorsName",
    }
)
"""Header elements that identify a patient or a site; with every PN element they are scrubbed from reasons."""
NATIVE_SYNTAX_BY_ENCODING = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}
"""(implicit VR, little endian) as parsed -> the uncompressed syntax, for files without a File Meta header."""
CONVERT_HINT = "convert it first, e.g. with DCMTK `dcmdjpeg in.dcm out.dcm` or `gdcmconv --raw in.dcm out.dcm`"

_reading = contextvars.ContextVar("innerssl_reading_dicom", default=False)
_ignored_voi_files = 0


# --- public API --------------------------------------------------------------------------------------


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` starts with the DICOM preamble and 'DICM' marker (for files without a .dcm suffix)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(PREAMBLE_LENGTH + len(DICOM_MAGIC))
    except OSError:
        return False
    return head[PREAMBLE_LENGTH:] == DICOM_MAGIC


def read_dicom_pixels(path: Path) -> np.ndarray:
    """The stored pixel values of a single-frame DICOM image, decoded but not rescaled or windowed.

    (H, W) for one sample per pixel, (H, W, 3) for colour (YBR already converted to RGB by pydicom,
    palette indices left as indices), in native byte order. Raises :class:`BadImageFile`.
    """
    path = Path(path)
    with _quiet_pydicom():
        dataset = _read_dataset(path)
        return _decode(path, dataset)


def read_dicom_image(path: Path, apply_voi_lut: bool = True) -> np.ndarray:
    """A single-frame DICOM image as float32 in [0, 1]: (H, W) grayscale, bright = dense, or (H, W, 3) RGB.

    ``apply_voi_lut`` applies the file's VOI LUT or first Window Center / Width when it has one (the
    contrast the site chose for reading); without it the full bit-depth range is kept. See the module
    docstring for the steps and the choice of normalisation range. Raises :class:`BadImageFile`.
    """
    path = Path(path)
    with _quiet_pydicom():
        dataset = _read_dataset(path)
        stored = _decode(path, dataset)
        photometric = _photometric(dataset)
        if photometric in MONOCHROME:
            image = _monochrome_to_unit(path, dataset, stored, apply_voi_lut)
            if photometric == MONOCHROME1:
                np.subtract(1.0, image, out=image)
            return image
        if photometric in RGB_LIKE:
            return _to_unit(stored, *_stored_range(path, dataset, stored))
        if photometric == PALETTE_COLOR:
            return _palette_to_unit(path, dataset, stored)
    supported = ", ".join((*MONOCHROME, *RGB_LIKE, PALETTE_COLOR))
    raise BadImageFile(path, f"photometric interpretation {photometric!r} is not supported (supported: {supported})")


def dicom_summary(path: Path) -> dict[str, str | int]:
    """Technical, non-identifying facts about a DICOM file, for reports and bug hunts (pixels not read)."""
    path = Path(path)
    with _quiet_pydicom():
        dataset = _read_dataset(path, stop_before_pixels=True)
        try:
            syntax = _transfer_syntax(dataset)
            return {
                "transfer_syntax_uid": str(syntax or ""),
                "transfer_syntax": syntax.name if syntax else "",
                "sop_class": UID(dataset.get("SOPClassUID", "")).name,
                "modality": str(dataset.get("Modality", "")),
                "photometric_interpretation": _photometric(dataset),
                "rows": int(dataset.get("Rows") or 0),
                "columns": int(dataset.get("Columns") or 0),
                "bits_stored": int(dataset.get("BitsStored") or 0),
                "number_of_frames": _number_of_frames(dataset),
            }
        except (ValueError, TypeError) as error:
            raise BadImageFile(path, f"invalid image header element ({_detail(error, dataset)})") from None


# --- reading and decoding ----------------------------------------------------------------------------


def _read_dataset(path: Path, stop_before_pixels: bool = False) -> Dataset:
    """Parse the header; a file without the 'DICM' marker is accepted only if it parses as an image.

    ``force=False`` first, so arbitrary files are rejected cheaply. Some old or exported files lack the
    preamble but are valid datasets; they are re-read with ``force=True`` and kept only when the result
    has Rows and pixel data, which random bytes do not produce.
    """
    try:
        return pydicom.dcmread(path, force=False, stop_before_pixels=stop_before_pixels)
    except FileNotFoundError:
        raise BadImageFile(path, "file not found") from None
    except IsADirectoryError:
        raise BadImageFile(path, "is a directory, not a file") from None
    except InvalidDicomError:
        pass
    except MemoryError:
        raise
    except Exception as error:  # a truncated or garbled header makes the parser raise nearly anything
        raise BadImageFile(path, f"the DICOM header is truncated or corrupt ({type(error).__name__})") from None
    not_dicom = "not a DICOM file (no 'DICM' marker at byte 128 and no image dataset could be parsed)"
    try:
        dataset = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels)
        looks_like_image = "Rows" in dataset and (stop_before_pixels or _has_pixel_data(dataset))
    except MemoryError:
        raise
    except Exception:
        raise BadImageFile(path, not_dicom) from None
    if not looks_like_image:
        raise BadImageFile(path, not_dicom)
    return dataset


def _decode(path: Path, dataset: Dataset, multi_frame: bool = False) -> np.ndarray:
    """Check what makes a file unusable before the (slow) decode, then decode with pydicom's plugins.

    ``multi_frame``: a file with several frames is accepted and decodes to (frames, H, W[, 3]) (volumes)."""
    if not _has_pixel_data(dataset):
        sop_class = UID(str(dataset.get("SOPClassUID", "unknown"))).name
        raise BadImageFile(path, f"it holds no pixel data (SOP class {sop_class}); only image files can be read")
    try:
        frames = _number_of_frames(dataset)
        samples_per_pixel = int(dataset.get("SamplesPerPixel") or 1)
    except (ValueError, TypeError) as error:
        raise BadImageFile(path, f"invalid Number of Frames / Samples per Pixel ({_detail(error, dataset)})") from None
    if frames > 1 and not multi_frame:
        raise BadImageFile(
            path, f"it is a multi-frame (3D/cine) file with {frames} frames; 2D datasets need single-frame images"
        )
    syntax = _transfer_syntax(dataset)
    if syntax is None:
        raise BadImageFile(path, "its File Meta header has no Transfer Syntax UID, so the pixel data cannot be decoded")
    try:
        decoder = get_decoder(syntax)
    except (NotImplementedError, ValueError):
        raise BadImageFile(
            path, f"transfer syntax {_syntax_label(syntax)} is not supported by pydicom's decoders; {CONVERT_HINT}"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise BadImageFile(path, f"no installed plugin decodes transfer syntax {_syntax_label(syntax)} ({missing})")
    try:
        pixels = dataset.pixel_array
    except MemoryError:
        raise
    except Exception as error:  # corrupt data makes pydicom or a codec plugin raise nearly any type
        raise BadImageFile(
            path,
            f"its {_syntax_label(syntax)} pixel data is corrupt or truncated and cannot be decoded "
            f"({_detail(error, dataset)})",
        ) from None
    expected_dims = (2 if samples_per_pixel == 1 else 3) + (frames > 1)
    if pixels.ndim != expected_dims:
        expected = f"{frames} frames" if frames > 1 else "a single 2D image"
        raise BadImageFile(path, f"decoded pixel data has shape {pixels.shape}, expected {expected}")
    if not pixels.dtype.isnative:  # big endian syntaxes decode to big-endian arrays; downstream math wants native
        pixels = pixels.astype(pixels.dtype.newbyteorder("="))
    return pixels


def _transfer_syntax(dataset: Dataset) -> UID | None:
    """The file's transfer syntax; for a file without File Meta, the uncompressed syntax it was parsed as."""
    file_meta = getattr(dataset, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is None and isinstance(dataset, FileDataset):
        syntax = NATIVE_SYNTAX_BY_ENCODING.get(tuple(dataset.original_encoding))
        if syntax is not None:
            dataset.file_meta.TransferSyntaxUID = syntax  # pydicom's decoders read it from there
    return UID(syntax) if syntax else None


def _syntax_label(syntax: UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)


def _has_pixel_data(dataset: Dataset) -> bool:
    return any(keyword in dataset for keyword in PIXEL_DATA_KEYWORDS)


def _number_of_frames(dataset: Dataset) -> int:
    return int(dataset.get("NumberOfFrames") or 1)


def _photometric(dataset: Dataset) -> str:
    return str(dataset.get("PhotometricInterpretation", "")).strip().upper()


# --- intensities ---------------------------------------------------------------------------------------


def _monochrome_to_unit(path: Path, dataset: Dataset, stored: np.ndarray, apply_voi_lut: bool) -> np.ndarray:
    """Rescale, then window (when wanted and sensible), then map the resulting range onto [0, 1]."""
    try:
        values = apply_modality_lut(stored, dataset)
        low, high = _modality_range(path, dataset, stored)
    except MemoryError:
        raise
    except Exception as error:  # a garbled Rescale Slope / Modality LUT
        raise BadImageFile(
            path, f"invalid Rescale Slope / Intercept or Modality LUT ({_detail(error, dataset)})"
        ) from None
    if apply_voi_lut:
        windowed = _apply_voi(path, dataset, values)
        if windowed is not None:
            return windowed
    return _to_unit(values, low, high)


def _apply_voi(path: Path, dataset: Dataset, values: np.ndarray) -> np.ndarray | None:
    """The VOI LUT (preferred, as pydicom does) or first window mapped onto [0, 1]; None when there is none
    or it is unusable (invalid, or saturating nearly every pixel), so the caller uses the bit-depth range.

    The output range is the one pydicom's transform itself produces: the smallest and largest VOI LUT
    entry, or the windowing output for the lowest and highest possible inputs.
    """
    has_window = "WindowCenter" in dataset and "WindowWidth" in dataset
    if not (has_window or "VOILUTSequence" in dataset):
        return None
    try:
        lut_items = dataset.get("VOILUTSequence") or []
        has_lut = len(lut_items) > 0 and "LUTDescriptor" in lut_items[0] and "LUTData" in lut_items[0]
        if not (has_lut or has_window):
            return None
        if has_lut:
            # A LUT maps integers; clipping to its domain first also keeps pydicom's uint16 indexing exact.
            entries, first, count = _lut_domain(lut_items[0])
            inputs = (np.rint(values) if values.dtype.kind == "f" else values).astype(np.int64)
            output = apply_voi(np.clip(inputs, first, first + count - 1, out=inputs), dataset)
            lut = apply_voi(entries, dataset)
            low, high = float(lut.min()), float(lut.max())
        else:
            output = apply_windowing(values, dataset)
            low, high = (float(v) for v in apply_windowing(np.array([-np.inf, np.inf]), dataset))
    except MemoryError:
        raise
    except Exception as error:  # e.g. Window Width 0, an unknown VOI LUT Function, a garbled LUT
        _report_ignored_voi(path, f"it is invalid ({_detail(error, dataset)})")
        return None
    if low == high:
        _report_ignored_voi(path, "its output range is empty")
        return None
    image = _to_unit(output, low, high)
    coverage = np.count_nonzero((image > 0) & (image < 1)) / image.size
    if coverage < MIN_VOI_COVERAGE:
        _report_ignored_voi(path, f"it saturates {100 * (1 - coverage):.1f}% of the pixels")
        return None
    return image


def _lut_domain(item: Dataset) -> tuple[np.ndarray, int, int]:
    """Every input a LUT maps (LUT Descriptor: entry count, 0 meaning 65536, then the first mapped value)."""
    count, first = int(item.LUTDescriptor[0]) or 2**16, int(item.LUTDescriptor[1])
    return np.arange(first, first + count, dtype=np.int64), first, count


def _stored_range(path: Path, dataset: Dataset, stored: np.ndarray) -> tuple[float, float]:
    """The values Bits Stored and Pixel Representation allow; float pixel data has no depth, so its min/max."""
    if stored.dtype.kind == "f":
        return float(np.nanmin(stored)), float(np.nanmax(stored))
    if stored.dtype == np.bool_:
        return 0.0, 1.0
    try:
        bits = int(dataset.BitsStored)
        signed = int(dataset.get("PixelRepresentation") or 0) == 1
    except (AttributeError, ValueError, TypeError) as error:
        raise BadImageFile(path, f"invalid Bits Stored / Pixel Representation ({_detail(error, dataset)})") from None
    if signed:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _modality_range(path: Path, dataset: Dataset, stored: np.ndarray) -> tuple[float, float]:
    """The stored range after the Modality LUT (its smallest and largest entry) or the rescale."""
    modality_lut = dataset.get("ModalityLUTSequence") or []
    if len(modality_lut) > 0:
        output = apply_modality_lut(_lut_domain(modality_lut[0])[0], dataset)
        return float(output.min()), float(output.max())
    low, high = _stored_range(path, dataset, stored)
    ends = apply_modality_lut(np.array([low, high]), dataset)
    return float(ends.min()), float(ends.max())


def _palette_to_unit(path: Path, dataset: Dataset, stored: np.ndarray) -> np.ndarray:
    """Palette indices -> RGB through the file's colour LUT, normalised by the LUT's bits per entry."""
    try:
        rgb = apply_color_lut(stored, dataset)
        bits = int(dataset.RedPaletteColorLookupTableDescriptor[2])
    except MemoryError:
        raise
    except Exception as error:
        raise BadImageFile(path, f"invalid palette colour lookup table ({_detail(error, dataset)})") from None
    return _to_unit(rgb, 0.0, 2.0**bits - 1)


def _to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """float32 ``(values - low) / (high - low)`` clipped to [0, 1], in one new array; all zeros if low == high."""
    image = np.subtract(values, low, dtype=np.float32)
    if high > low:
        image /= np.float32(high - low)
    else:
        image.fill(0.0)
    np.nan_to_num(image, copy=False, nan=0.0)
    return np.clip(image, 0.0, 1.0, out=image)


def _report_ignored_voi(path: Path, why: str) -> None:
    """Warn for the first such file only: a dataset from one writer can have thousands of them."""
    global _ignored_voi_files
    _ignored_voi_files += 1
    if _ignored_voi_files == 1:
        logger.warning(
            "Ignoring the window / VOI LUT of %s: %s; using the bit-depth range instead "
            "(further files like this are logged at DEBUG level)",
            path,
            why,
        )
    else:
        logger.debug("Ignoring the window / VOI LUT of %s: %s", path, why)


# --- privacy and noise ---------------------------------------------------------------------------------


class _SilenceWhileReading(logging.Filter):
    """Drops pydicom's and its plugins' log records emitted while this module reads a file.

    They quote header values (privacy), repeat for every file of a dataset (noise), and what matters
    reaches the user as the :class:`BadImageFile` reason. Records from other threads or tasks pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not _reading.get()


_SILENCER = _SilenceWhileReading()
SILENCED_LOGGER_PREFIXES = ("pydicom", "pylibjpeg", "openjpeg", "libjpeg", "rle")
_silenced_logger_count = -1


def _silence_decoder_loggers() -> None:
    """Attach the filter to every pydicom / plugin logger (a filter on a parent does not see child records).

    Plugins create loggers when first imported, so the registry is rescanned whenever it has grown.
    """
    global _silenced_logger_count
    registry = logging.root.manager.loggerDict
    if len(registry) == _silenced_logger_count:
        return
    for name in [*SILENCED_LOGGER_PREFIXES, *list(registry)]:
        if name.split(".")[0] in SILENCED_LOGGER_PREFIXES:
            target = logging.getLogger(name)
            if _SILENCER not in target.filters:
                target.addFilter(_SILENCER)
    _silenced_logger_count = len(registry)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """No warnings or log records from pydicom while reading (see :class:`_SilenceWhileReading`)."""
    _silence_decoder_loggers()
    token = _reading.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _silence_decoder_loggers()  # decoding may have imported a plugin that made new loggers
        _reading.reset(token)


def _identifying_values(dataset: Dataset) -> set[str] | None:
    """The file's patient / site identifying strings (and their name parts), to scrub from messages;
    None when the header is too broken to walk."""
    found: set[str] = set()
    try:
        for element in dataset.iterall():
            if element.VR != "PN" and element.keyword not in IDENTIFYING_KEYWORDS:
                continue
            values = element.value if element.VM > 1 else [element.value]
            for value in values:
                text = str(value or "")
                found.add(text)
                found.update(text.replace("^", " ").replace("=", " ").split())
    except Exception:
        return None
    return {value for value in found if len(value) >= MIN_REDACTED_LENGTH}


def _detail(error: BaseException, dataset: Dataset) -> str:
    """A decoder's exception as one short line, scrubbed of the file's identifying values."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    identifying = _identifying_values(dataset)
    if identifying is None:  # nothing can be scrubbed, so nothing is quoted
        return type(error).__name__
    for value in sorted(identifying, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    if len(text) > MAX_DETAIL_CHARS:
        text = text[: MAX_DETAIL_CHARS - 3] + "..."
    return text
