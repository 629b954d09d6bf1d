"""Reading whole-body bone scan views from DICOM: the one pixel reader of the project.

Clinics store the anterior and posterior views either as one multi-frame NM instance (a frame per
detector, each detector's view in its View Code Sequence) or as one instance per view. Pixels are
decoded by pydicom with its plugins (pylibjpeg, pyjpegls, RLE) for every common transfer syntax,
then the modality LUT (Rescale Slope / Intercept) is applied, so values are counts.

MONOCHROME1 only tells a viewer to show high values dark (the usual black-on-white look of a
bone scan); in an NM image the stored values are still counts, so they are kept as they are.
Inverting them would make the background the hottest region and break the Poisson statistics.
Only when a MONOCHROME1 image is evidently stored inverted (its background, the bulk of any
whole-body scan, sits at the top of the value range) is it flipped back so that high values
mean high uptake.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from bone_age.errors import BoneAgeError

View = Literal["anterior", "posterior"]
VIEWS: tuple[View, View] = ("anterior", "posterior")

# SNOMED CT codes of DICOM CID 26 (nuclear medicine projections); other codings are matched
# by their Code Meaning text.
VIEW_CODES: dict[str, View] = {"399321004": "anterior", "399001007": "posterior"}
_VIEW_WORDS = (
    (re.compile(r"\b(ANT|ANTERIOR|AP)\b"), "anterior"),
    (re.compile(r"\b(POST|POSTERIOR|PA)\b"), "posterior"),
)
_TEXT_KEYWORDS = ("ImageID", "SeriesDescription", "ImageComments", "ProtocolName")


class DicomReadError(BoneAgeError, ValueError):
    """A file that cannot give the requested view; the message names file and reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def _view_of_code_sequence(item: Dataset) -> View | None:
    for code in item.get("ViewCodeSequence", []):
        value = str(code.get("CodeValue", "")).strip()
        if value in VIEW_CODES:
            return VIEW_CODES[value]
        view = view_from_text(str(code.get("CodeMeaning", "")))
        if view:
            return view
    return None


def views_in_text(text: str) -> set[View]:
    """Every view named in a free-text header (both for e.g. "WB ANT POST")."""
    return {view for pattern, view in _VIEW_WORDS if pattern.search(text.upper())}


def view_from_text(text: str) -> View | None:
    """ANT/ANTERIOR or POST/POSTERIOR named in a free-text header (None if neither or both)."""
    found = views_in_text(text)
    return found.pop() if len(found) == 1 else None


def header_views(ds: Dataset) -> set[View]:
    """Every view named in the free-text headers (Image ID, descriptions, comments, protocol)."""
    return set().union(*(views_in_text(str(ds.get(kw, ""))) for kw in _TEXT_KEYWORDS))


def frame_views(ds: Dataset) -> dict[View, int]:
    """Which frame holds which view, from the headers alone (no pixel data needed)."""
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    detectors = ds.get("DetectorInformationSequence", [])
    if n_frames > 1:
        vector = list(ds.get("DetectorVector", range(1, n_frames + 1)))
        found: dict[View, int] = {}
        for frame, detector in enumerate(vector[:n_frames]):
            view = _view_of_code_sequence(detectors[detector - 1]) if detector <= len(detectors) \
                else None
            if view is not None and view not in found:
                found[view] = frame
        return found
    view = _view_of_code_sequence(ds) or next(
        (v for item in detectors if (v := _view_of_code_sequence(item))), None
    )
    if view is None:
        view = next(
            (v for kw in _TEXT_KEYWORDS if (v := view_from_text(str(ds.get(kw, ""))))), None
        )
    return {view: 0} if view else {}


def views_in_file(ds: Dataset, path: str | Path, view: View | None = None) -> dict[View, int]:
    """Which frame holds which view of one file; ``view`` names a single frame (the user knows).

    Headers only: nothing is decoded. A single frame with no view in its headers and none stated
    is an error, since a file alone (unlike a manifest row) does not say which view it is.
    """
    single = int(ds.get("NumberOfFrames", 1) or 1) == 1
    if single and view:
        return {view: 0}
    views = frame_views(ds)
    if single and not views:
        raise DicomReadError(path, "a single frame whose headers do not name its view; state "
                                   "it with --view anterior or --view posterior")
    return views


def read_dataset(path: str | Path, pixels: bool = True) -> Dataset:
    """pydicom read with a one-line error for anything that is not a readable DICOM file."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DicomReadError(path, "file does not exist") from None
    except (pydicom.errors.InvalidDicomError, OSError, EOFError, ValueError) as err:
        raise DicomReadError(path, f"not a readable DICOM file ({err})") from None


def pixel_counts(ds: Dataset, path: str | Path = "<dataset>") -> np.ndarray:
    """All frames as float32 counts, shape (frames, rows, columns)."""
    if "PixelData" not in ds:
        raise DicomReadError(path, "no pixel data")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if int(ds.get("SamplesPerPixel", 1)) != 1 or not photometric.startswith("MONOCHROME"):
        raise DicomReadError(path, f"colour image ({photometric}, Samples per Pixel "
                                   f"{ds.get('SamplesPerPixel', 1)}); expected grey counts")
    try:
        arr = apply_modality_lut(ds.pixel_array, ds)
    except Exception as err:  # decoders raise many types; report them all the same way
        raise DicomReadError(path, f"pixel data cannot be decoded ({err})") from None
    arr = _as_float32(arr).reshape(-1, *arr.shape[-2:])
    if photometric == "MONOCHROME1" and arr.size and _stored_inverted(arr):
        arr = arr.max() - arr
    return arr


def _as_float32(arr: np.ndarray) -> np.ndarray:
    """float32 copy made by torch: a fresh multi-MB numpy array costs ~10x more here (measured in
    experiments/bench: numpy asks the kernel for huge pages, which are zeroed on first touch)."""
    try:
        return torch.from_numpy(np.ascontiguousarray(arr)).to(torch.float32).numpy()
    except (TypeError, RuntimeError, ValueError):  # dtypes or byte orders torch does not hold
        return np.asarray(arr, dtype=np.float32)


def _stored_inverted(arr: np.ndarray) -> bool:
    """True when the median (the background) lies in the upper half of the value range."""
    low, high = float(arr.min()), float(arr.max())
    return high > low and float(np.median(arr)) > (low + high) / 2


def _select_view(path: str | Path, view: View, ds: Dataset, frames: np.ndarray) -> np.ndarray:
    if frames.shape[0] == 1:
        return frames[0]
    views = frame_views(ds)
    if view not in views:
        raise DicomReadError(
            path, f"{frames.shape[0]} frames but no frame is marked as the {view} view"
        )
    return frames[views[view]]


def read_view(path: str | Path, view: View, ds: Dataset | None = None) -> np.ndarray:
    """The counts of one view (float32, rows x columns) of a whole-body scan file.

    A single-frame file is taken as the view the caller names (the manifest says so); a
    multi-frame file must tell its views apart in its headers.
    """
    ds = read_dataset(path) if ds is None else ds
    return _select_view(path, view, ds, pixel_counts(ds, path))


def read_study_views(files: dict[View, Path]) -> dict[View, np.ndarray]:
    """Every view of one study, each file read and decoded once (a two-frame file holds both).

    An all-zero or non-finite view is an error: it would only teach the model noise.
    """
    decoded: dict[Path, tuple[Dataset, np.ndarray]] = {}
    out: dict[View, np.ndarray] = {}
    for view, path in files.items():
        if path not in decoded:
            ds = read_dataset(path)
            decoded[path] = (ds, pixel_counts(ds, path))
        counts = _select_view(path, view, *decoded[path])
        if not np.isfinite(counts).all() or counts.max() <= 0:
            raise DicomReadError(path, f"{view} view is empty or not finite")
        out[view] = counts
    return out
