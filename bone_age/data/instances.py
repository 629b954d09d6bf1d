"""One file of a DICOM export, read header-only and classified: which views it can give, or why
it cannot be used (the per-file statuses of the index report)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import UID

from bone_age.data.anatomy import (
    PAIR_MARGIN,
    ViewDecision,
    body_problem,
    decide_pair,
    decide_view,
    shape_problem,
)
from bone_age.data.dicom import (
    PHOTOMETRIC,
    VIEWS,
    DicomReadError,
    View,
    count_problem,
    frames_by_view,
    header_int,
    header_views,
    number_of_frames,
    other_projection,
    pixel_counts,
    read_dataset,
    read_view,
    shown_code,
    size_problem,
    values,
)
from bone_age.utils.files import not_regular

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # prefix of every Secondary Capture class
NM_MODALITIES = {"NM"}
# Modality codes a report may quote (DICOM PS3.3 C.7.3.1.1.1, the common ones); any other value
# is not echoed.
MODALITIES = frozenset({
    "AR", "ASMT", "AU", "BDUS", "BI", "BMD", "CR", "CT", "DG", "DOC", "DX", "ECG", "EPS", "ES",
    "FID", "GM", "HC", "HD", "IO", "IOL", "IVOCT", "IVUS", "KER", "KO", "LEN", "LS", "MG", "MR",
    "M3D", "NM", "OAM", "OCT", "OP", "OPM", "OPT", "OPTBSV", "OPTENF", "OPV", "OSS", "OT", "PLAN",
    "PR", "PT", "PX", "REG", "RESP", "RF", "RG", "RTDOSE", "RTIMAGE", "RTINTENT", "RTPLAN",
    "RTRAD", "RTRECORD", "RTSEGANN", "RTSTRUCT", "RWV", "SEG", "SM", "SMR", "SR", "SRF", "STAIN",
    "TEXTUREMAP", "TG", "US", "VA", "XA", "XC",
})
SC_MODALITIES = {"NM", "OT", ""}  # a screen capture of a bone scan may say OT or nothing
# Value lengths above this are not loaded while grouping (the pixel data, mainly).
DEFER_SIZE = "4 KB"


@dataclass(eq=False)  # identity: one object per file
class Instance:
    """One input file; ``status`` stays empty while the file is usable."""

    path: Path
    rel: str  # path relative to the DICOM folder: what reports show
    ds: Dataset | None = None
    views: dict[View, list[int]] = field(default_factory=dict)  # view -> frames marked so
    side_by_side: bool = False  # one frame holding both views, left and right
    view_from: str = ""  # where its view came from: header, option (--view) or anatomy
    view_margin: float | None = None  # the anatomy's margin, when it decided
    unlabelled: str = ""  # one or two frames whose headers name no view: why (until decided)
    frames: int = 1  # Number of Frames (2: both views in one file)
    # Its two frames get their views from the anatomy or --frames, not from its headers: the
    # index writes each frame as its own file (readers take a multi-frame file's views only
    # from its headers).
    split_frames: bool = False
    status: str = ""
    reason: str = ""

    def fail(self, status: str, reason: str) -> Instance:
        self.status, self.reason = status, reason
        return self

    @property
    def sop_uid(self) -> str:
        return _uid(self.ds, "SOPInstanceUID")

    @property
    def study_uid(self) -> str:
        return _uid(self.ds, "StudyInstanceUID")


def _uid(ds: Dataset | None, keyword: str) -> str:
    found = values(ds, keyword) if ds is not None else []
    return str(found[0]).strip() if len(found) == 1 else ""


def _header(inst: Instance) -> Instance:
    """Read the header (pixel data deferred, not decoded); sets a status when unreadable."""
    why = not_regular(inst.path)  # a FIFO given alone (predict, realism) would block the read
    if why:
        status = "not_a_file" if why.startswith("is not a regular") else "unreadable"
        return inst.fail(status, f"{inst.rel}: {why}")
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


def _expected_native_bytes(ds: Dataset, path: Path) -> int:
    rows, cols = header_int(ds, "Rows", 0, path), header_int(ds, "Columns", 0, path)
    samples = header_int(ds, "SamplesPerPixel", 1, path)
    bits = header_int(ds, "BitsAllocated", 0, path)
    return (rows * cols * number_of_frames(ds, path) * samples * bits + 7) // 8


def _pixel_data_short(ds: Dataset, path: Path) -> bool:
    """True when native pixel data hold fewer bytes than the image needs.

    Only for native (uncompressed) transfer syntaxes, where the length is fixed by the header;
    the bytes present in the file are compared too, except for a deflated file, whose element
    offsets are in the inflated stream (pydicom reports a truncated deflate stream itself).
    """
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "") or ""))
    if not syntax.is_transfer_syntax or syntax.is_compressed:
        return False  # encapsulated frames, or a syntax pydicom does not know: the decoder says
    element = ds.get_item("PixelData", keep_deferred=True)
    if isinstance(element, RawDataElement):
        length, start = element.length, element.value_tell
    else:
        length, start = len(element.value or b""), None
    if length == 0xFFFFFFFF:  # undefined length (encapsulated) under a native syntax
        return False
    needed = _expected_native_bytes(ds, path)
    if length < needed:
        return True
    return not syntax.is_deflated and start is not None \
        and path.stat().st_size < start + needed


def _modality(ds: Dataset) -> str:
    return " ".join(str(v) for v in values(ds, "Modality")).strip().upper()


def _split_refusal(ds: Dataset, path: Path) -> str | None:
    """Why a single image may not be split as two whole-body views side by side (or None).

    Only an NM image qualifies, and only if each half has a whole-body view's shape (a 1024 x
    256 view is 4:1; halves between 2.5:1 and 6:1 tall): a square 512 x 512 image is a spot
    view or a screen capture of something else, and cutting it in two would invent views.
    """
    if _modality(ds) not in NM_MODALITIES:
        return "its modality is not NM"
    rows, cols = header_int(ds, "Rows", 0, path), header_int(ds, "Columns", 0, path)
    if cols < 2 or not 2.5 <= rows / (cols / 2) <= 6:
        return (f"its {rows} x {cols} pixels are not two whole-body views side by side "
                "(each half about 4:1 tall)")
    return None


def _looks_side_by_side(ds: Dataset, path: Path) -> bool:
    """Both views named in the text headers, or an image at least half as wide as tall: a
    single whole-body view is about 4:1 tall (e.g. 1024 x 256), two side by side about 2:1."""
    rows, cols = header_int(ds, "Rows", 0, path), header_int(ds, "Columns", 0, path)
    return header_views(ds) == set(VIEWS) or (rows > 0 and 2 * cols >= rows)


def classify(inst: Instance, split_side_by_side: bool = False,
             stated: View | None = None,
             stated_frames: tuple[View, View] | None = None) -> Instance:
    """Read one file's header and decide what it can contribute to a study.

    ``stated`` is the view the user gave (--view) for single frames whose headers name none;
    ``stated_frames`` the views of the two frames of a file whose headers name none
    (--frames). Without them such a file is left ``unlabelled``, for the indexer to decide
    from its anatomy. Never raises: whatever goes wrong with one file becomes its status.
    """
    try:
        return _classify(inst, split_side_by_side, stated, stated_frames)
    except DicomReadError as err:
        return inst.fail("unreadable", f"{inst.rel}: {err.reason}")
    except Exception as err:  # a damaged header can fail in any attribute; only the type:
        # the message of an arbitrary error may quote a header value (a name, a date)
        return inst.fail("unreadable", f"{inst.rel}: damaged DICOM header "
                                       f"({type(err).__name__})")


def _classify(inst: Instance, split_side_by_side: bool, stated: View | None,
              stated_frames: tuple[View, View] | None) -> Instance:
    path = inst.path
    if path.name.upper() == "DICOMDIR":
        return inst.fail("dicomdir", f"{inst.rel}: DICOMDIR index file, skipped")
    if _header(inst).status:
        return inst
    ds, rel = inst.ds, inst.rel
    sop_class = _uid(ds, "SOPClassUID") or _uid(ds.file_meta, "MediaStorageSOPClassUID")
    if sop_class == DICOMDIR_SOP_CLASS:
        return inst.fail("dicomdir", f"{rel}: DICOMDIR index file, skipped")
    if not inst.sop_uid or not inst.study_uid:
        return inst.fail("unreadable", f"{rel}: header lacks SOP Instance / Study Instance UID "
                                       "(truncated or not an image)")
    modality = _modality(ds)
    is_sc = sop_class.startswith(SECONDARY_CAPTURE)
    if modality not in NM_MODALITIES and not (is_sc and modality in SC_MODALITIES):
        return inst.fail("unsupported_modality",
                         f"{rel}: modality {shown_code(modality, MODALITIES)}; expected NM "
                         "(bone scintigraphy)")
    if "PixelData" not in ds:
        return inst.fail("no_pixels", f"{rel}: no pixel data")
    photometric = " ".join(str(v) for v in values(ds, "PhotometricInterpretation")).upper()
    if header_int(ds, "SamplesPerPixel", 1, path) != 1 or not photometric.startswith("MONO"):
        shown = shown_code(photometric, PHOTOMETRIC)
        return inst.fail("unsupported_image", f"{rel}: colour image ({shown}); expected grey "
                                              "counts")
    too_large = size_problem(ds, path)
    if too_large:
        return inst.fail("unsupported_image", f"{rel}: {too_large}")
    if _pixel_data_short(ds, path):  # after the colour check: subsampled colour is shorter
        return inst.fail("unreadable", f"{rel}: file is truncated (pixel data shorter than "
                                       "its Rows x Columns x frames)")
    inst.views = frames_by_view(ds, path)
    if inst.views:
        inst.view_from = "header"
        return _shape_checked(inst)
    if other_projection(ds):
        return inst.fail("view_unknown", f"{rel}: its View Code Sequence names a projection "
                                         "other than anterior or posterior (e.g. lateral)")
    refusal = _split_refusal(ds, path) if number_of_frames(ds, path) == 1 else "several frames"
    if split_side_by_side and refusal is None:
        inst.side_by_side = True
        inst.views = {"anterior": [0], "posterior": [0]}
        return inst
    if _looks_side_by_side(ds, path) and refusal is None:
        return inst.fail("view_unknown", f"{rel}: one image that seems to hold both views "
                                         "side by side; rerun with --split-side-by-side")
    if split_side_by_side and _looks_side_by_side(ds, path):
        return inst.fail("not_side_by_side", f"{rel}: no view named, and not split with "
                                             f"--split-side-by-side: {refusal}")
    why = (f"{rel}: no anterior or posterior view named in View Code Sequence, Image ID, "
           "descriptions or comments")
    inst.frames = number_of_frames(ds, path)
    if inst.frames == 2:  # both views in one file, in an order the headers do not say
        if stated_frames:
            inst.views = {stated_frames[0]: [0], stated_frames[1]: [1]}
            inst.view_from, inst.split_frames = "option", True
            return _shape_checked(inst)
        inst.unlabelled = why  # the indexer decides its two frames from their anatomy
        return inst
    if inst.frames != 1:
        return inst.fail("view_unknown", f"{why}; {inst.frames} frames (only a file of one or "
                                         "two whole-body views can be told apart)")
    if stated:
        inst.views, inst.view_from = {stated: [0]}, "option"  # --view (no "-": CSV-safe)
        return _shape_checked(inst)
    inst.unlabelled = why  # the indexer decides it from the anatomy, with its study
    return inst


def _shape_checked(inst: Instance) -> Instance:
    """Fails a file whose frames are not shaped like one whole-body view (a 1 x 1 image, a
    square spot view): whatever its header says, no bone age can be read from it."""
    problem = shape_problem(header_int(inst.ds, "Rows", 0, inst.path),
                            header_int(inst.ds, "Columns", 0, inst.path))
    return inst.fail("unsupported_image", f"{inst.rel}: {problem}") if problem else inst


FRAMES_HINT = "state their order with --frames anterior,posterior (or posterior,anterior)"


def counts_decision(counts) -> ViewDecision | str:
    """The anatomy's view of one frame's counts, or why it cannot tell."""
    counted = count_problem(counts)
    problem = counted[1] if counted else body_problem(counts)
    if problem:
        return f"its anatomy cannot tell the view: {problem}"
    try:
        return decide_view(counts)
    except ValueError as err:
        return f"its anatomy cannot tell the view: {err}"


def frame_decision(inst: Instance, frame: int = 0) -> ViewDecision | str:
    """The anatomy's view of one frame of a file, or why it cannot be decided."""
    try:
        frames = pixel_counts(read_dataset(inst.path), inst.rel)
    except DicomReadError as err:
        return err.reason
    if frame >= frames.shape[0]:
        return f"frame {frame + 1} is missing from its pixel data"
    return counts_decision(frames[frame])


def decide_frames(inst: Instance) -> str | None:
    """Give an unlabelled two-frame file its views from the anatomy (both frames of one study,
    compared: the rule of data/anatomy.py's decide_pair), or return why it cannot."""
    try:
        frames = pixel_counts(read_dataset(inst.path), inst.rel)
    except DicomReadError as err:
        return err.reason
    if frames.shape[0] != 2:
        return f"{frames.shape[0]} frames in its pixel data where its header says 2"
    found = [counts_decision(f) for f in frames]
    for n, d in enumerate(found, 1):
        if isinstance(d, str):
            return f"frame {n}: {d}; {FRAMES_HINT}"
    first, second, margin = decide_pair(*found)  # type: ignore[arg-type]
    if margin < PAIR_MARGIN:
        return (f"its anatomy cannot tell its two frames apart (score difference "
                f"{margin:.2f} < {PAIR_MARGIN}); {FRAMES_HINT}")
    inst.views = {first: [0], second: [1]}
    inst.view_from, inst.view_margin = "anatomy", round(margin, 3)
    inst.unlabelled, inst.split_frames = "", True
    return None


def single_file(path: Path, label: str, view: View | None = None) -> tuple[Dataset,
                                                                          dict[View, int]]:
    """The index's checks for one file given alone (predict, explain, evaluate): modality,
    image type and size, a view named in its headers or ``view`` (a single frame), a
    whole-body view's shape and, in the decoded pixels, counts and a body outline.

    ``label`` names the file in messages (a pseudonym where its path may name the patient).
    Returns the header and each view's frame; raises DicomReadError with the index's reason.
    """
    inst = classify(Instance(Path(path), label), stated=view)
    if inst.status:
        raise DicomReadError(label, inst.reason.removeprefix(f"{label}: "))
    if inst.unlabelled and inst.frames == 2:
        # Its readers take a two-frame file's views from its headers only: the index writes
        # each frame as a file of its own view (from the anatomy, or --frames).
        raise DicomReadError(label, "two frames whose headers do not name their views; index "
                                    "its folder with python -m bone_age.index (views from the "
                                    "anatomy, or --frames anterior,posterior) and use the "
                                    "manifest")
    if inst.unlabelled:
        raise DicomReadError(label, "a single frame whose headers do not name its view; state "
                                    "it with --view anterior or --view posterior")
    for v, frames in inst.views.items():
        if len(frames) > 1:
            raise DicomReadError(label, f"frames {', '.join(str(f + 1) for f in frames)} are "
                                        f"all marked as the {v} view")
    ds = read_dataset(path)
    for v in inst.views:
        counts = read_view(label, v, ds) if number_of_frames(ds, path) > 1 else \
            pixel_counts(ds, label)[0]
        counted = count_problem(counts)
        problem = counted[1] if counted else body_problem(counts)
        if problem:
            raise DicomReadError(label, f"the {v} view: {problem}")
    return ds, {v: f[0] for v, f in inst.views.items()}
