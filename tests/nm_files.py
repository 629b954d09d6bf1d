"""Small, valid NM whole-body files for index tests (64 x 16 pixels: fast to write and read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
CODES = {"anterior": ("399321004", "anterior projection"),
         "posterior": ("399001007", "posterior projection")}
ROWS, COLS = 64, 16


def _view_item(view: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodeMeaning = CODES[view]
    item.CodingSchemeDesignator = "SCT"
    return item


def _detector(view: str) -> Dataset:
    det = Dataset()
    det.ViewCodeSequence = Sequence([_view_item(view)])
    return det


def counts(seed: int, frames: int = 1) -> np.ndarray:
    """Poisson counts with a brighter 'body' in the middle columns."""
    rng = np.random.default_rng(seed)
    lam = np.full((frames, ROWS, COLS), 2.0)
    lam[:, 4:60, 4:12] = 40.0
    return rng.poisson(lam).astype("<u2")


def nm_dataset(patient_id: str = "PID-0001", name: str = "Doe^Jane",
               birth: str = "19600315", views: tuple[str, ...] = ("anterior", "posterior"),
               study_uid: str | None = None, seed: int = 0) -> Dataset:
    """One NM instance with a frame per view (Detector Vector 1..n), labels and identity."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = NM_IMAGE_STORAGE, sop
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "NM"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = patient_id, name, birth
    ds.PatientSex, ds.PatientAge, ds.StudyDate = "F", "063Y", "20240101"
    ds.SeriesDescription = "WB " + " ".join(v[:4].upper().rstrip("E") for v in views)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = len(views)
    ds.DetectorVector = list(range(1, len(views) + 1))
    ds.NumberOfDetectors = len(views)
    ds.DetectorInformationSequence = Sequence([_detector(v) for v in views])
    if len(views) == 1:
        ds.ViewCodeSequence = Sequence([_view_item(views[0])])
    ds.PixelData = counts(seed, len(views)).tobytes()
    return ds


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
