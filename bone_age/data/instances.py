"""One file of a DICOM export, read header-only and classified: which views it can give, or why
it cannot be used (the per-file statuses of the index report)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from bone_age.data.dicom import VIEWS, View, frame_views, header_views

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # prefix of every Secondary Capture class
NM_MODALITIES = {"NM"}
SC_MODALITIES = {"NM", "OT", ""}  # a screen capture of a bone scan may say OT or nothing
# Value lengths above this are not loaded while grouping (the pixel data, mainly).
DEFER_SIZE = "4 KB"


@dataclass(eq=False)  # identity: one object per file
class Instance:
    """One input file; ``status`` stays empty while the file is usable."""

    path: Path
    rel: str  # path relative to the DICOM folder: what reports show
    ds: Dataset | None = None
    views: dict[View, int] = field(default_factory=dict)  # view -> frame
    side_by_side: bool = False  # one frame holding both views, left and right
    status: str = ""
    reason: str = ""

    def fail(self, status: str, reason: str) -> Instance:
        self.status, self.reason = status, reason
        return self

    @property
    def sop_uid(self) -> str:
        return str(self.ds.get("SOPInstanceUID", "")).strip() if self.ds else ""

    @property
    def study_uid(self) -> str:
        return str(self.ds.get("StudyInstanceUID", "")).strip() if self.ds else ""


def _header(inst: Instance) -> Instance:
    """Read the header (pixel data deferred, not decoded); sets a status when unreadable."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            inst.ds = pydicom.dcmread(inst.path, defer_size=DEFER_SIZE)
    except pydicom.errors.InvalidDicomError:
        return inst.fail("not_dicom", f"{inst.rel}: not a DICOM file (no DICM preamble)")
    except Exception as err:  # a damaged file can raise nearly anything inside the parser
        return inst.fail("unreadable", f"{inst.rel}: damaged DICOM file ({type(err).__name__})")
    if any("End of file" in str(w.message) for w in caught):
        return inst.fail("unreadable", f"{inst.rel}: file is truncated (ends inside an element)")
    return inst


def _expected_native_bytes(ds: Dataset) -> int:
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 0) or 0)
    return rows * cols * frames * samples * bits // 8


def _looks_side_by_side(ds: Dataset) -> bool:
    """Both views named in the text headers, or an image at least half as wide as tall: a
    single whole-body view is about 4:1 tall (e.g. 1024 x 256), two side by side about 2:1."""
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    return header_views(ds) == set(VIEWS) or (rows > 0 and 2 * cols >= rows)


def classify(path: Path, root: Path, split_side_by_side: bool = False) -> Instance:
    """Read one file's header and decide what it can contribute to a study."""
    inst = Instance(path, path.relative_to(root).as_posix())
    if path.name.upper() == "DICOMDIR":
        return inst.fail("dicomdir", f"{inst.rel}: DICOMDIR index file, skipped")
    if _header(inst).status:
        return inst
    ds, rel = inst.ds, inst.rel
    sop_class = str(ds.get("SOPClassUID", "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
    if sop_class == DICOMDIR_SOP_CLASS:
        return inst.fail("dicomdir", f"{rel}: DICOMDIR index file, skipped")
    if not inst.sop_uid or not inst.study_uid:
        return inst.fail("unreadable", f"{rel}: header lacks SOP Instance / Study Instance UID "
                                       "(truncated or not an image)")
    modality = str(ds.get("Modality", "")).strip().upper()
    is_sc = sop_class.startswith(SECONDARY_CAPTURE)
    if modality not in NM_MODALITIES and not (is_sc and modality in SC_MODALITIES):
        return inst.fail("unsupported_modality",
                         f"{rel}: modality {modality or 'none'}; expected NM (bone scintigraphy)")
    if "PixelData" not in ds:
        return inst.fail("no_pixels", f"{rel}: no pixel data")
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and not syntax.is_compressed \
            and path.stat().st_size < _expected_native_bytes(ds):
        return inst.fail("unreadable", f"{rel}: file is truncated (pixel data shorter than "
                                       f"{ds.get('Rows')} x {ds.get('Columns')} pixels)")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1 or not photometric.startswith("MONOCHROME"):
        return inst.fail("unsupported_image",
                         f"{rel}: colour image ({photometric or 'unknown'}); expected grey counts")
    inst.views = frame_views(ds)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not inst.views and frames == 1 and _looks_side_by_side(ds):
        if not split_side_by_side:
            return inst.fail("view_unknown", f"{rel}: one image that seems to hold both views "
                                             "side by side; rerun with --split-side-by-side")
        inst.side_by_side = True
        inst.views = {"anterior": 0, "posterior": 0}
    elif not inst.views:
        return inst.fail("view_unknown", f"{rel}: no anterior or posterior view named in View "
                                         "Code Sequence, Image ID, descriptions or comments")
    return inst
