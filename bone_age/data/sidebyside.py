"""Split a side-by-side image (both views in one frame) into two plain single-view files.

Assumption (the usual hanging of a whole-body bone scan): the LEFT half of the image is the
anterior view and the RIGHT half the posterior view, both head up. Each half is written as a
new, minimal DICOM file that holds only pixels and its view (no patient, study or institution
attributes), so the manifest names ordinary single-view files and every reader (cache,
training, prediction) needs no special case.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bone_age.data.dicom import View
from bone_age.utils.outputs import write_atomic

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
_CODES = {"anterior": ("399321004", "anterior projection", "ANT"),
          "posterior": ("399001007", "posterior projection", "POST")}


def split_halves(counts: np.ndarray) -> dict[View, np.ndarray]:
    """Left half -> anterior, right half -> posterior (the middle column of an odd width is
    dropped so both halves have the same shape)."""
    half = counts.shape[-1] // 2
    return {"anterior": counts[..., :half], "posterior": counts[..., -half:]}


def _store(counts: np.ndarray) -> tuple[np.ndarray, float, float]:
    """uint16 pixels plus the Rescale Slope/Intercept that give the counts back."""
    low, high = float(counts.min()), float(counts.max())
    if np.array_equal(counts, np.round(counts)) and low >= 0 and high <= 65535:
        return counts.astype("<u2"), 1.0, 0.0  # integer counts: stored exactly
    slope = (high - low) / 65535 or 1.0
    return np.round((counts - low) / slope).astype("<u2"), slope, low


def write_view_file(counts: np.ndarray, path: Path, view: View, study_key: str,
                    source: str = "half of a side-by-side image") -> None:
    """A minimal single-frame DICOM file of one view's counts, with no identifying attribute;
    ``source`` says what it was cut from (its Derivation Description)."""
    # UIDs derived from the pseudonymous study key: re-running the index rewrites the same file.
    uid = generate_uid(entropy_srcs=["bone-age-split", study_key, view])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE_STORAGE, uid
    ds.Modality = "NM"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    code, meaning, word = _CODES[view]
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code, "SCT", meaning
    ds.ViewCodeSequence = Sequence([item])
    ds.ImageID = word
    ds.DerivationDescription = f"{view}: {source}"
    pixels, slope, intercept = _store(np.asarray(counts, dtype=np.float64))
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:.10g}", f"{intercept:.10g}"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    write_atomic(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
