"""A folder of real views against the phantom: per view and measure, the share of the real views
inside the phantom's 1st-99th percentile range, and the anatomy's view scores of both.

Real views come from DICOM files (counts; every measure) or 8-bit images (display values of an
unknown display processing: only the shape measures, which an increasing processing changes
little). A view is named by the file's header, else by a folder on its path named anterior or
posterior (ant, post), else by ``--view``; a file that gives no view, no whole body, or cannot
be read is skipped and counted, never named: the report refers to files by their number in the
sorted listing of the folder, as a path may name a patient.

Phantom frames are rendered at the camera's 1024 x 256 and brought to each real view's size
(smoothed, then linearly resampled, counts rescaled so a frame's total is kept), so that both
are measured on the same pixel grid.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from bone_age.data.anatomy import body_problem, decide_view
from bone_age.data.dicom import VIEWS, DicomReadError, count_problem, pixel_counts, read_dataset
from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import not_regular
from bone_age.utils.outputs import write_text_atomic

from ..render import NCOLS, NROWS
from ..subject import render_subject, sample_subject
from .measures import SHAPE_MEASURES, measure

RANGE = (1.0, 99.0)  # percentiles of the phantom's values that a real value should lie between
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif"})
EIGHT_BIT_MODES = frozenset({"L", "LA", "P", "RGB", "RGBA"})
FOLDER_VIEWS = {"anterior": "anterior", "ant": "anterior", "posterior": "posterior",
                "post": "posterior"}  # fmt: skip
# Shares the markdown quotes as the coverage target (issue 32): >= 90% of the real views inside
# on every shape measure, and the phantom's median anatomy score within 0.2 of the real one.
TARGET_SHARE, TARGET_SCORE = 0.9, 0.2


class RealismInputError(BoneAgeError, ValueError):
    """A folder of real views that gives nothing to compare."""


@dataclass
class RealView:
    view: str
    frame: np.ndarray  # counts (DICOM) or display values (image), rows head to feet
    kind: str  # "dicom" or "image"


@dataclass
class FolderViews:
    views: list[RealView] = field(default_factory=list)
    files: int = 0  # files looked at
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (file number, reason)


def folder_view(path: Path, root: Path) -> str | None:
    """The view named by the nearest folder between ``root`` (included) and ``path``."""
    for folder in [*path.relative_to(root).parents][:-1] + [Path(".")]:
        name = (root / folder).resolve().name.lower()
        if name in FOLDER_VIEWS:
            return FOLDER_VIEWS[name]
    return None


def _checked(frame: np.ndarray) -> str | None:
    problem = count_problem(frame)
    return problem[1] if problem else body_problem(frame)


def _image_views(path: Path, given: str | None) -> list[RealView]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in EIGHT_BIT_MODES:
                raise RealismInputError(f"an image of mode {im.mode}, not 8-bit grey or colour")
            frame = np.asarray(im.convert("L"), dtype=np.float64)
    except RealismInputError:
        raise
    except Exception as err:  # not an image, damaged, or too large to decode
        # Only the type: a decoder's message may quote the file's name.
        raise RealismInputError(f"not a readable image ({type(err).__name__})") from None
    if given is None:
        raise RealismInputError("no view: put it in a folder named anterior or posterior, or "
                                "state --view")  # fmt: skip
    return [RealView(given, frame, "image")]


def _dicom_views(path: Path, given: str | None) -> list[RealView]:
    from bone_age.data.instances import Instance, classify

    inst = classify(Instance(path, "file"), stated=given)
    if inst.status:
        raise RealismInputError(inst.reason.removeprefix("file: "))
    if inst.unlabelled:
        raise RealismInputError("no view in its header: put it in a folder named anterior or "
                                "posterior, or state --view")  # fmt: skip
    frames = pixel_counts(read_dataset(path), "file")
    out = []
    for view, found in inst.views.items():
        if len(found) != 1 or found[0] >= frames.shape[0]:
            raise RealismInputError(f"its header marks {len(found)} frames as the {view} view")
        out.append(RealView(view, np.asarray(frames[found[0]], dtype=np.float64), "dicom"))
    return out


def read_folder(root: Path, stated: str | None = None) -> FolderViews:
    """Every real view under ``root`` (recursively), and the files skipped with their reason.

    Args:
        root: a folder of DICOM files and/or 8-bit images (hidden files are left out).
        stated: the view of files whose header and folders name none (``--view``), or None.
    """
    found = FolderViews()
    files = sorted(p for p in root.rglob("*")
                   if not any(part.startswith(".") for part in p.relative_to(root).parts)
                   and not p.is_dir())  # fmt: skip
    for number, path in enumerate(files, 1):
        found.files += 1
        given = folder_view(path, root) or stated
        try:
            why = not_regular(path)
            if why is not None:
                raise RealismInputError(f"the file {why}")
            if path.suffix.lower() in IMAGE_SUFFIXES:
                views = _image_views(path, given)
            else:
                views = _dicom_views(path, given)
            for v in views:
                problem = _checked(v.frame)
                if problem:
                    raise RealismInputError(f"the {v.view} frame shows no whole body: {problem}")
        except DicomReadError as err:
            found.skipped.append((number, err.reason))
            continue
        except RealismInputError as err:
            found.skipped.append((number, str(err)))
            continue
        found.views += views
    return found


def resample(frame: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A phantom frame on another pixel grid: smoothed before it is shrunk (no aliasing of the
    counting noise), linear interpolation, counts rescaled so that its total is kept.

    Args:
        frame: counts, rows head to feet.
        shape: rows x columns wanted.
    """
    frame = np.asarray(frame, dtype=np.float64)
    if frame.shape == tuple(shape):
        return frame
    zoom = (shape[0] / frame.shape[0], shape[1] / frame.shape[1])
    sigma = [max(1 / z / 2.5, 0.0) if z < 1 else 0.0 for z in zoom]
    if max(sigma) > 0.3:
        frame = ndi.gaussian_filter(frame, sigma)
    out = np.maximum(ndi.zoom(frame, zoom, order=1, grid_mode=True, mode="nearest"), 0.0)
    if out.shape != tuple(shape):  # ndi.zoom rounds the output size
        out = np.pad(out, [(0, max(s - o, 0)) for s, o in zip(shape, out.shape, strict=True)])
        out = out[: shape[0], : shape[1]]
    return out / zoom[0] / zoom[1]


def _only(values: dict[str, float], names: Iterable[str]) -> dict[str, float]:
    return {k: values[k] for k in names}


def phantom_measures(groups: set[tuple[str, tuple[int, int]]], subjects: int,
                     seed: int = 0) -> dict[tuple[str, tuple[int, int]], list[dict[str, Any]]]:
    """Measures and anatomy score of ``subjects`` phantom frames for each (view, shape) group;
    each subject is rendered once.

    Args:
        groups: the views and frame shapes of the real views.
        subjects: phantom subjects (>= 1).
        seed: cohort seed.
    """
    out: dict[tuple[str, tuple[int, int]], list[dict[str, Any]]] = {g: [] for g in groups}
    for i in range(subjects):
        frames = render_subject(sample_subject(seed, i))[:2]
        for view, shape in groups:
            f = resample(frames[VIEWS.index(view)], shape)
            values: dict[str, Any] = measure(f)
            values["anatomy_score"] = decide_view(f).score
            out[view, shape].append(values)
    return out


def coverage(real: Sequence[dict[str, float]], phantom: Sequence[dict[str, float]],
             names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per measure: how many real values lie inside the phantom's 1-99% range.

    Args:
        real: measures of each real view (a measure may be missing or NaN).
        phantom: measures of each phantom frame.
        names: the measures to report.
    """
    rows = []
    for name in names:
        vals = np.array([p[name] for p in phantom], dtype=float)
        vals = vals[np.isfinite(vals)]
        got = np.array([r[name] for r in real if name in r], dtype=float)
        got = got[np.isfinite(got)]
        if not vals.size or not got.size:
            continue
        lo, hi = np.percentile(vals, RANGE)
        inside = int(((got >= lo) & (got <= hi)).sum())
        rows.append({"measure": name, "shape": name in SHAPE_MEASURES, "views": int(got.size),
                     "inside": inside, "share": round(inside / got.size, 4),
                     "phantom_p1": float(lo), "phantom_p99": float(hi),
                     "real_median": float(np.median(got)),
                     "phantom_median": float(np.median(vals)),
                     "below": int((got < lo).sum()), "above": int((got > hi).sum())})  # fmt: skip
    return rows


def _all_inside(real: Sequence[dict[str, float]], rows: list[dict[str, Any]]) -> int:
    shape_rows = [r for r in rows if r["shape"]]
    return sum(all(r["phantom_p1"] <= v[r["measure"]] <= r["phantom_p99"] for r in shape_rows)
               for v in real)  # fmt: skip


def compare_folder(found: FolderViews, subjects: int, seed: int = 0) -> dict[str, Any]:
    """The folder's report as a dict (see :func:`markdown` for its text).

    Args:
        found: the real views (:func:`read_folder`).
        subjects: phantom subjects.
        seed: phantom cohort seed.
    """
    groups = {(v.view, v.frame.shape) for v in found.views}
    phantom = phantom_measures(groups, subjects, seed)
    skipped = [{"file": n, "reason": r} for n, r in found.skipped]
    report: dict[str, Any] = {"phantom": {"subjects": subjects, "seed": seed,
                                          "range_percentiles": list(RANGE)},
                              "files": found.files, "views": {}, "skipped": skipped}  # fmt: skip
    for view in VIEWS:
        mine = [v for v in found.views if v.view == view]
        if not mine:
            continue
        real, sim = [], []
        for v in mine:
            values = measure(v.frame)
            names = SHAPE_MEASURES if v.kind == "image" else tuple(values)
            real.append({**_only(values, names), "anatomy_score": decide_view(v.frame).score})
        for shape in sorted({v.frame.shape for v in mine}):
            sim += phantom[view, shape]
        names = [n for n in sim[0] if n != "anatomy_score"]
        rows = coverage(real, sim, names)
        real_scores = [r["anatomy_score"] for r in real]
        sim_scores = [s["anatomy_score"] for s in sim]
        report["views"][view] = {
            "real_views": len(mine), "kinds": dict(Counter(v.kind for v in mine)),
            "shapes": sorted({f"{v.frame.shape[0]}x{v.frame.shape[1]}" for v in mine}),
            "inside_all_shape_measures": _all_inside(real, rows),
            "anatomy_score": {"real_median": float(np.median(real_scores)),
                              "phantom_median": float(np.median(sim_scores)),
                              "real_p10_p90": [float(x) for x in np.percentile(real_scores,
                                                                                [10, 90])],
                              "phantom_p10_p90": [float(x) for x in np.percentile(sim_scores,
                                                                                   [10, 90])]},
            "measures": rows,
        }  # fmt: skip
    return report


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def markdown(report: dict[str, Any]) -> str:
    """The report's text: no file name or path (a path may name a patient)."""
    ph = report["phantom"]
    lines = ["# Phantom realism over a folder of real views", "",
             f"Phantom: {ph['subjects']} subjects (seed {ph['seed']}), rendered at {NROWS} x "
             f"{NCOLS} and brought to each real view's size. A real value is inside when it lies "
             f"within the phantom's {RANGE[0]:g}st-{RANGE[1]:g}th percentiles. Files looked at: "
             f"{report['files']}; skipped: {len(report['skipped'])} (listed at the end by their "
             "number in the folder's sorted listing).", ""]  # fmt: skip
    for view, v in report["views"].items():
        kinds = ", ".join(f"{n} {k}" for k, n in v["kinds"].items())
        shape_rows = [r for r in v["measures"] if r["shape"]]
        low = ", ".join(r["measure"] for r in shape_rows if r["share"] < TARGET_SHARE) or "none"
        sc = v["anatomy_score"]
        lines += [f"## {view}", "",
                  f"{v['real_views']} real views ({kinds}; {', '.join(v['shapes'])} pixels). "
                  f"Inside on all {len(shape_rows)} shape measures: "
                  f"{v['inside_all_shape_measures']} of {v['real_views']}. Shape measures "
                  f"with fewer than {TARGET_SHARE:.0%} of the real views inside: {low}.", "",
                  f"Anatomy score (the view rule's, > 0 anterior): real median "
                  f"{sc['real_median']:+.2f} (10-90%: {sc['real_p10_p90'][0]:+.2f} .. "
                  f"{sc['real_p10_p90'][1]:+.2f}), phantom median {sc['phantom_median']:+.2f} "
                  f"({sc['phantom_p10_p90'][0]:+.2f} .. {sc['phantom_p10_p90'][1]:+.2f}).", "",
                  "| measure | shape | real views | inside | share | below | above | phantom p1 "
                  "| phantom p99 | real median | phantom median |",
                  "| --- " * 11 + "|"]  # fmt: skip
        for r in v["measures"]:
            share = f"{r['share']:.0%}"
            if r["shape"] and r["share"] < TARGET_SHARE:
                share = f"**{share}**"
            lines.append(f"| {r['measure']} | {'yes' if r['shape'] else ''} | {r['views']} | "
                         f"{r['inside']} | {share} | {r['below']} | {r['above']} | "
                         f"{_fmt(r['phantom_p1'])} | {_fmt(r['phantom_p99'])} | "
                         f"{_fmt(r['real_median'])} | {_fmt(r['phantom_median'])} |")  # fmt: skip
        lines.append("")
    lines += ["Shape measures (body widths and count shares along the height, left-right "
              "symmetry) hold for 8-bit images too; the others (count statistics, contrast, "
              "spectrum, edge) are reported for DICOM views only: an image's display processing "
              "is unknown.", ""]  # fmt: skip
    if report["skipped"]:
        lines += ["## Skipped files", ""]
        why = Counter(s["reason"] for s in report["skipped"])
        for reason, n in why.most_common():
            numbers = [str(s["file"]) for s in report["skipped"] if s["reason"] == reason]
            lines.append(f"- {n} file(s) ({', '.join(numbers[:20])}"
                         f"{', ...' if n > 20 else ''}): {reason}")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def write_folder_report(out: Path, report: dict[str, Any]) -> None:
    """Write ``out``/realism.md and realism.json.

    Args:
        out: output folder (created).
        report: :func:`compare_folder`'s result.
    """
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "realism.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "realism.md", markdown(report))
