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
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
import torch
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.pixels.common import PhotometricInterpretation

from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import not_regular

# pydicom's value-validation warnings quote the offending value (a malformed birth date or
# name) on stderr; every value the project uses is checked where it is read instead.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

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


def values(ds: Dataset, keyword: str) -> list[Any]:
    """Every value of an element as a list, whatever its multiplicity.

    pydicom gives a multi-valued element as a MultiValue, a single value as a plain scalar and
    an empty element as None or '' (a missing one is absent): callers see one shape for all.
    """
    value = ds.get(keyword)
    if value is None or (isinstance(value, (str, bytes)) and not value):
        return []
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        return list(value)
    return [value]


def items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence element ([] when absent, empty or not a sequence at all)."""
    return [item for item in values(ds, keyword) if isinstance(item, Dataset)]


def _whole(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return int(number) if number.is_integer() else None


_VR_MAX = {"US": 2**16 - 1, "UL": 2**32 - 1, "IS": 2**31 - 1, "SS": 2**15 - 1, "SL": 2**31 - 1}


def header_int(ds: Dataset, keyword: str, default: int, path: str | Path = "<dataset>") -> int:
    """A single whole-number attribute (``default`` when absent or empty).

    Raises DicomReadError when it holds several values or is not a whole number between 0 and
    the largest its standard VR can hold (the value itself is not quoted: a damaged header may
    hold anything there, a birth date included).
    """
    found = values(ds, keyword)
    if not found:
        return default
    number = _whole(found[0])
    largest = _VR_MAX.get(dictionary_VR(keyword), 2**31 - 1)
    if len(found) > 1 or number is None or not 0 <= number <= largest:
        why = f"holds {len(found)} values" if len(found) > 1 else "is not a whole number"
        raise DicomReadError(path, f"{keyword} {why}; expected one whole number "
                                   f"from 0 to {largest}")
    return number


PHOTOMETRIC = frozenset(p.value for p in PhotometricInterpretation)


def shown_code(text: str, known: frozenset[str] | set[str]) -> str:
    """A coded header value as a message may quote it: only a known code is quoted (a damaged
    or misused header may hold anything, a name included)."""
    return text if text in known else ("none" if not text else "an unrecognised code")


def _view_of_code_sequence(item: Dataset) -> View | None:
    for code in items(item, "ViewCodeSequence"):
        value = str(code.get("CodeValue", "") or "").strip()
        if value in VIEW_CODES:
            return VIEW_CODES[value]
        view = view_from_text(str(code.get("CodeMeaning", "") or ""))
        if view:
            return view
    return None


def other_projection(ds: Dataset) -> bool:
    """True when a View Code Sequence (of the file or a detector) codes a projection, but
    neither anterior nor posterior (a lateral or oblique view)."""
    holders = [ds, *items(ds, "DetectorInformationSequence")]
    # An empty item codes nothing (some cameras write one): only a filled code counts.
    coded = any(str(code.get(k, "") or "").strip() for h in holders
                for code in items(h, "ViewCodeSequence") for k in ("CodeValue", "CodeMeaning"))
    return coded and not any(_view_of_code_sequence(h) for h in holders)


def views_in_text(text: str) -> set[View]:
    """Every view named in a free-text header (both for e.g. "WB ANT POST")."""
    return {view for pattern, view in _VIEW_WORDS if pattern.search(text.upper())}


def view_from_text(text: str) -> View | None:
    """ANT/ANTERIOR or POST/POSTERIOR named in a free-text header (None if neither or both)."""
    found = views_in_text(text)
    return found.pop() if len(found) == 1 else None


def _text(ds: Dataset, keyword: str) -> str:
    return " ".join(str(v) for v in values(ds, keyword))


def header_views(ds: Dataset) -> set[View]:
    """Every view named in the free-text headers (Image ID, descriptions, comments, protocol)."""
    return set().union(*(views_in_text(_text(ds, kw)) for kw in _TEXT_KEYWORDS))


def number_of_frames(ds: Dataset, path: str | Path = "<dataset>") -> int:
    frames = header_int(ds, "NumberOfFrames", 1, path)
    if frames < 1:
        raise DicomReadError(path, "NumberOfFrames is 0")
    return frames


def _marked_frames(ds: Dataset, path: str | Path) -> list[tuple[int, View]]:
    """(frame, view) of every frame whose headers name its view.

    A frame's detector is its entry in Detector Vector (frames in order when there is none);
    the detector's item of Detector Information Sequence names its view. A Detector Vector
    shorter than the frames leaves the frames beyond it without a view. Only frames that have
    a detector are looked at: a header may claim 2**31 frames.
    """
    n_frames = number_of_frames(ds, path)
    detectors = items(ds, "DetectorInformationSequence")
    if n_frames > 1:
        vector = values(ds, "DetectorVector") or list(range(1, min(n_frames, len(detectors)) + 1))
        found = []
        for frame, entry in enumerate(vector[:n_frames]):
            detector = _whole(entry)
            if detector is not None and 1 <= detector <= len(detectors):
                view = _view_of_code_sequence(detectors[detector - 1])
                if view is not None:
                    found.append((frame, view))
        return found
    view = _view_of_code_sequence(ds) or next(
        (v for item in detectors if (v := _view_of_code_sequence(item))), None
    )
    if view is None and not other_projection(ds):  # a coded lateral view is no text's ANT
        view = next((v for kw in _TEXT_KEYWORDS if (v := view_from_text(_text(ds, kw)))), None)
    return [(0, view)] if view else []


def frames_by_view(ds: Dataset, path: str | Path = "<dataset>") -> dict[View, list[int]]:
    """Every frame marked as each view (more than one frame for a view is ambiguous)."""
    found: dict[View, list[int]] = {}
    for frame, view in _marked_frames(ds, path):
        found.setdefault(view, []).append(frame)
    return found


def ambiguity(frames: dict[View, list[int]], only: View | None = None) -> str | None:
    """Why a view cannot be taken from a file that marks several frames with it (or None)."""
    for view, found in frames.items():
        if len(found) > 1 and only in (None, view):
            listed = ", ".join(str(f + 1) for f in found)
            return f"frames {listed} are all marked as the {view} view"
    return None


def frame_views(ds: Dataset, path: str | Path = "<dataset>") -> dict[View, int]:
    """Which frame holds which view, from the headers alone (no pixel data needed).

    Raises DicomReadError when two frames claim the same view: taking either would be a guess.
    """
    frames = frames_by_view(ds, path)
    why = ambiguity(frames)
    if why:
        raise DicomReadError(path, why)
    return {view: found[0] for view, found in frames.items()}


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def brief(err: BaseException, limit: int = 160) -> str:
    """An exception as one short line (decoder messages may span many lines), with anything
    quoted in it left out: library messages quote header values, which may be anything."""
    text = _QUOTED.sub("'...'", " ".join(str(err).split()))
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def read_dataset(path: str | Path, pixels: bool = True) -> Dataset:
    """pydicom read with a one-line error for anything that is not a readable DICOM file."""
    why = not_regular(path)  # a FIFO would block the read, a device never end
    if why is not None:
        raise DicomReadError(path, f"file {why}")
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except FileNotFoundError:
        raise DicomReadError(path, "file does not exist") from None
    except (pydicom.errors.InvalidDicomError, OSError, EOFError) as err:
        raise DicomReadError(path, f"not a readable DICOM file ({brief(err)})") from None
    except Exception as err:  # a damaged file can raise nearly anything inside the parser
        # Only the type: the message of an arbitrary error may quote a header value.
        raise DicomReadError(path, f"damaged DICOM file ({type(err).__name__})") from None


def pixel_counts(ds: Dataset, path: str | Path = "<dataset>") -> np.ndarray:
    """All frames as float32 counts, shape (frames, rows, columns)."""
    if "PixelData" not in ds:
        raise DicomReadError(path, "no pixel data")
    photometric = _text(ds, "PhotometricInterpretation").strip().upper() or "MONOCHROME2"
    samples = header_int(ds, "SamplesPerPixel", 1, path)
    if samples != 1 or not photometric.startswith("MONOCHROME"):
        raise DicomReadError(path, f"colour image ({shown_code(photometric, PHOTOMETRIC)}, "
                                   f"Samples per Pixel {samples}); expected grey counts")
    rows, cols = header_int(ds, "Rows", 0, path), header_int(ds, "Columns", 0, path)
    if rows < 1 or cols < 1:
        raise DicomReadError(path, f"image of {rows} x {cols} pixels")
    too_large = size_problem(ds, path)
    if too_large:
        raise DicomReadError(path, too_large)
    try:
        arr = apply_modality_lut(ds.pixel_array, ds)
        arr = _as_float32(arr).reshape(-1, rows, cols)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # decoders raise many types, Rust ones pyo3's PanicException
        # (a BaseException): report them all the same way
        raise DicomReadError(path, f"pixel data cannot be decoded ({brief(err)})") from None
    if photometric == "MONOCHROME1" and arr.size and _stored_inverted(arr):
        arr = arr.max() - arr
    return arr


MAX_PIXELS = 2**26  # 128 times a two-view 1024 x 256 scan: a header claiming more is wrong


def size_problem(ds: Dataset, path: str | Path = "<dataset>") -> str | None:
    """Why an image is too large to decode (its header would make the decoder allocate
    gigabytes), else None. The sizes are not quoted: a damaged header may hold anything."""
    pixels = (header_int(ds, "Rows", 0, path) * header_int(ds, "Columns", 0, path)
              * number_of_frames(ds, path) * header_int(ds, "SamplesPerPixel", 1, path))
    if pixels > MAX_PIXELS:
        return (f"Rows x Columns x frames is larger than any whole-body scan (over {MAX_PIXELS} "
                "pixels); not decoded")
    return None


def count_problem(counts: np.ndarray) -> tuple[str, str] | None:
    """(status, why) when a view cannot be trained on as counts, else None.

    An all-zero or non-finite view would only teach the model noise. Negative values are no
    counts either: they come from processed images (background subtraction) or from pixels read
    with the wrong sign, and clipping them to zero would hide the latter (the hottest pixels
    wrap negative) and bias the former, so such a view is refused, not clipped.
    """
    if not np.isfinite(counts).all() or counts.max() <= 0:
        return "empty_image", "has no counts (all zero or not finite)"
    low = float(counts.min())
    if low < 0:
        n = int((counts < 0).sum())
        return "negative_counts", (f"has {n} pixels below zero (lowest {low:g}): not raw "
                                   "counts (processed, or stored with the wrong sign)")
    return None


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
    marked = frames_by_view(ds, path)
    why = ambiguity(marked, only=view)
    if why:
        raise DicomReadError(path, why)
    if view not in marked:
        raise DicomReadError(
            path, f"{frames.shape[0]} frames but no frame is marked as the {view} view"
        )
    frame = marked[view][0]
    if frame >= frames.shape[0]:
        raise DicomReadError(path, f"the {view} view is frame {frame + 1} of a file that "
                                   f"holds {frames.shape[0]}")
    return frames[frame]


def read_view(path: str | Path, view: View, ds: Dataset | None = None) -> np.ndarray:
    """The counts of one view (float32, rows x columns) of a whole-body scan file.

    A single-frame file is taken as the view the caller names (the manifest says so); a
    multi-frame file must tell its views apart in its headers.
    """
    ds = read_dataset(path) if ds is None else ds
    return _select_view(path, view, ds, pixel_counts(ds, path))


def read_study_views(files: dict[View, Path]) -> dict[View, np.ndarray]:
    """Every view of one study, each file read and decoded once (a two-frame file holds both).

    A view that :func:`count_problem` refuses is an error.
    """
    decoded: dict[Path, tuple[Dataset, np.ndarray]] = {}
    out: dict[View, np.ndarray] = {}
    for view, path in files.items():
        if path not in decoded:
            ds = read_dataset(path)
            decoded[path] = (ds, pixel_counts(ds, path))
        counts = _select_view(path, view, *decoded[path])
        problem = count_problem(counts)
        if problem:
            raise DicomReadError(path, f"the {view} view {problem[1]}")
        out[view] = counts
    return out
