"""An RSNA Pneumonia (Kaggle layout) folder built from real NIH pixels, for tests and for trying the CXR configs.

Each NIH PNG becomes ``stage_2_train_images/<patientId>.dcm``: an 8-bit MONOCHROME2 CR image with the JPEG
baseline transfer syntax, as in the challenge. ``stage_2_train_labels.csv`` has several box rows for positive
patients and one row without a box for negatives. Command line:

    python -m tests.rsna_layout ../shared/data/nih-sample/images /tmp/rsna-layout
"""

from __future__ import annotations

import argparse
import io
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, SecondaryCaptureImageStorage, generate_uid

LABELS_CSV = "stage_2_train_labels.csv"
IMAGE_FOLDER = "stage_2_train_images"
BOXES_PER_POSITIVE = (1, 2, 3)
JPEG_QUALITY = 95


def jpeg_dicom(pixels: np.ndarray, patient_id: str, path: Path) -> None:
    """An 8-bit MONOCHROME2 CR image with JPEG baseline transfer syntax, like the RSNA challenge files."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=JPEG_QUALITY)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient_id
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def build_rsna_layout(
    png_folder: Path, root: Path, num_images: int, positives: int, image_size: int, seed: int = 0
) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """Write the layout under ``root``; returns each patient's label and source pixels in [0, 1]."""
    (root / IMAGE_FOLDER).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sources = sorted(png_folder.glob("*.png"))[:num_images]
    rows, labels, pixels = [], {}, {}
    for index, source in enumerate(sources):
        patient = str(uuid.UUID(int=int(rng.integers(1 << 62))))
        image = np.asarray(Image.open(source).convert("L").resize((image_size, image_size), Image.BILINEAR))
        jpeg_dicom(image, patient, root / IMAGE_FOLDER / f"{patient}.dcm")
        pixels[patient] = image.astype(np.float32) / 255
        if index < positives:
            for box in range(BOXES_PER_POSITIVE[index % len(BOXES_PER_POSITIVE)]):
                rows.append((patient, 10.0 * box, 20.0, 50.0, 60.0, 1))
            labels[patient] = 1
        else:
            rows.append((patient, np.nan, np.nan, np.nan, np.nan, 0))
            labels[patient] = 0
    frame = pd.DataFrame(rows, columns=["patientId", "x", "y", "width", "height", "Target"])
    frame.sample(frac=1, random_state=1).to_csv(root / LABELS_CSV, index=False)
    return labels, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("png_folder", type=Path)
    parser.add_argument("root", type=Path)
    parser.add_argument("--num_images", type=int, default=100)
    parser.add_argument("--positives", type=int, default=50)
    parser.add_argument("--image_size", type=int, default=256)
    arguments = parser.parse_args()
    build_rsna_layout(
        arguments.png_folder, arguments.root, arguments.num_images, arguments.positives, arguments.image_size
    )
    print(f"RSNA-layout folder written to {arguments.root}")


if __name__ == "__main__":
    main()
