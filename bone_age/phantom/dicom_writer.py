"""Write phantom studies as DICOM NM Image Storage files (two-frame or single-frame layout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid

from bone_age.utils.outputs import write_atomic

from .render import NROWS, PIXEL_MM
from .subject import Subject

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
VIEW_CODES = {
    "ANT": ("399321004", "anterior projection"),
    "POST": ("399001007", "posterior projection"),
}
TRANSFER_SYNTAXES = {"explicit": ExplicitVRLittleEndian, "rle": RLELossless}


def _uid(subj: Subject, *kind: str) -> str:
    # Deterministic from (seed, index, role) so re-generation gives identical files.
    return generate_uid(entropy_srcs=["bone-age-phantom", str(subj.seed), str(subj.index), *kind])


def _view_item(view: str) -> Dataset:
    code, meaning = VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _detector_item(view: str) -> Dataset:
    det = Dataset()
    det.ViewCodeSequence = Sequence([_view_item(view)])
    det.CollimatorType = "PARA"
    det.CollimatorGridName = "LEHR"
    return det


def _base(subj: Subject, sop_uid: str, series_uid: str, series_no: int, desc: str,
          shape: tuple[int, int]) -> Dataset:  # fmt: skip
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = generate_uid(entropy_srcs=["bone-age-phantom"])
    date = subj.study_date.strftime("%Y%m%d")
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"]
    ds.SOPClassUID = NM_IMAGE_STORAGE
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.InstanceCreationDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "100000"
    ds.Modality = "NM"
    ds.Manufacturer = "bone-age phantom"
    if subj.site is not None:  # what a real export names (fake names; index pseudonymises them)
        ds.InstitutionName = subj.site.institution
        ds.StationName = subj.site.station
        ds.Manufacturer = subj.site.manufacturer
        ds.ManufacturerModelName = subj.site.model
    ds.StudyDescription = "Whole Body Bone (phantom)"
    ds.SeriesDescription = desc
    ds.PatientName = f"PHANTOM^{subj.index:06d}"
    ds.PatientID = subj.subject_id
    ds.PatientBirthDate = subj.birth_date.strftime("%Y%m%d")
    ds.PatientSex = subj.sex
    ds.PatientAge = f"{subj.age:03d}Y"
    ds.StudyInstanceUID = _uid(subj, "study")
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = subj.subject_id
    ds.SeriesNumber = series_no
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    spacing = PIXEL_MM * NROWS / shape[0]  # a finer matrix over the same field
    ds.PixelSpacing = [f"{spacing:.2f}", f"{spacing:.2f}"]
    rp = Dataset()
    rp.Radiopharmaceutical = "Tc-99m MDP"
    ds.RadiopharmaceuticalInformationSequence = Sequence([rp])
    return ds


def _save(ds: Dataset, frames: np.ndarray, path: Path, syntax: str) -> None:
    ds.PixelData = np.ascontiguousarray(frames, dtype="<u2").tobytes()
    if syntax == "rle":
        # Keep the deterministic SOP Instance UID (pydicom would draw a new, random one).
        ds.compress(RLELossless, generate_instance_uid=False)
    # Whole or not at all: an interrupted phantom never leaves a truncated scan.
    write_atomic(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))


def write_study(
    subj: Subject,
    ant: np.ndarray,
    post: np.ndarray,
    counts: tuple[float, float],
    out_dir: Path,
    rel_dir: str,
    layout: str = "two-frame",
    transfer_syntax: str = "explicit",
) -> tuple[str, str, str]:
    """Write one study; returns (anterior relpath, posterior relpath, study UID)."""
    sid = subj.subject_id
    if layout == "two-frame":
        ds = _base(subj, _uid(subj, "sop"), _uid(subj, "series"), 1, "WB ANT+POST", ant.shape)
        ds.ImageID = "ANT+POST"
        ds.NumberOfFrames = 2
        ds.FrameIncrementPointer = (0x0054, 0x0020)
        ds.DetectorVector = [1, 2]
        ds.NumberOfDetectors = 2
        ds.DetectorInformationSequence = Sequence([_detector_item("ANT"), _detector_item("POST")])
        ds.CountsAccumulated = int(counts[0] + counts[1])
        rel = f"{rel_dir}/{sid}.dcm"
        _save(ds, np.stack([ant, post]), out_dir / rel, transfer_syntax)
        return rel, rel, ds.StudyInstanceUID
    rels = []
    for k, (view, img, n) in enumerate((("ANT", ant, counts[0]), ("POST", post, counts[1]))):
        ds = _base(subj, _uid(subj, "sop", view), _uid(subj, "series", view), k + 1,
                   f"WB {view}", img.shape)  # fmt: skip
        ds.ImageID = view
        # Rows run head->feet; columns run to the patient's left (ANT) or right (POST).
        ds.PatientOrientation = ["L" if view == "ANT" else "R", "F"]
        ds.NumberOfFrames = 1
        ds.FrameIncrementPointer = (0x0054, 0x0020)
        ds.DetectorVector = [k + 1]
        ds.NumberOfDetectors = 1
        ds.ViewCodeSequence = Sequence([_view_item(view)])
        ds.DetectorInformationSequence = Sequence([_detector_item(view)])
        ds.CountsAccumulated = int(n)
        rel = f"{rel_dir}/{sid}_{view}.dcm"
        _save(ds, img, out_dir / rel, transfer_syntax)
        rels.append(rel)
    return rels[0], rels[1], ds.StudyInstanceUID
