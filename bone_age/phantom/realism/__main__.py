"""CLI: python -m bone_age.phantom.realism REF [--view auto|anterior|posterior]
[--subjects N] [--seed S] --out DIR.

REF a DICOM file: compares N phantom scans of its view with it on label-free measures and
writes DIR/realism.md, DIR/realism.json and figures (see ``one_scan``). REF a folder of real
views (DICOM or 8-bit images): per view and measure, the share of its views inside the
phantom's 1-99% range (see ``population``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

from bone_age.data.anatomy import ViewDecision, decide_view
from bone_age.data.dicom import VIEWS
from bone_age.utils.arguments import MAX_REALISM_SUBJECTS, ArgumentParser, count
from bone_age.utils.errors import command
from bone_age.utils.outputs import check_output_dir, check_outside_scan_folders

from ..render import NCOLS, NROWS
from .one_scan import write_report
from .population import RealismInputError, compare_folder, read_folder, write_folder_report

CHOICES = ("auto", *VIEWS)
SUBJECTS = {"file": 100, "folder": 200}  # --subjects' defaults: 1-99% of a folder needs more


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m bone_age.phantom.realism",
                description="Compare phantom scans with a real whole-body scan.")  # fmt: skip
    p.add_argument("ref", type=Path, help="real scan (DICOM), or a folder of real views (DICOM "
                   "or 8-bit images; a view per file, or per folder named anterior/posterior)")
    p.add_argument("--view", type=str.lower, choices=CHOICES, default="auto",
                   help="view of the reference (auto: from its header, else its anatomy); for "
                        "a folder, the view of files whose header and folders name none")
    p.add_argument("--subjects", type=count(MAX_REALISM_SUBJECTS), default=None,
                   help=f"phantom subjects (1..{MAX_REALISM_SUBJECTS:,}; default "
                        f"{SUBJECTS['file']} for a file, {SUBJECTS['folder']} for a folder)")
    p.add_argument("--seed", type=int, default=0, help="phantom cohort seed")
    p.add_argument("--out", type=Path, required=True, help="output folder (created)")
    return p  # fmt: skip


def load_reference(path: Path, view: str = "auto") -> tuple[np.ndarray, ViewDecision, str, str]:
    """The reference frame, the view to compare, how it was chosen, and a neutral description.

    Args:
        path: DICOM file of a whole-body scan.
        view: "auto", "anterior" or "posterior".
    """
    from bone_age.data.anatomy import body_problem
    from bone_age.data.dicom import (
        DicomReadError,
        count_problem,
        frames_by_view,
        pixel_counts,
        read_dataset,
        read_view,
    )
    from bone_age.data.instances import Instance, classify

    # The index's checks first: an NM whole-body image, not a CT, a colour picture or a spot.
    inst = classify(Instance(Path(path), str(path)), stated=None if view == "auto" else view)
    if inst.status:
        raise DicomReadError(path, inst.reason.removeprefix(f"{path}: "))
    ds = read_dataset(path)
    frames = pixel_counts(ds, path)
    marked = {v: f for v, f in frames_by_view(ds, path).items() if len(f) == 1}
    if frames.shape[0] > 1:
        if view == "auto":
            raise DicomReadError(path, f"{frames.shape[0]} frames; name the one to compare with "
                                       "--view anterior or --view posterior")  # fmt: skip
        img = read_view(path, view, ds)
    else:
        img = frames[0]
    problem = count_problem(img)
    if problem:
        raise DicomReadError(path, f"the frame {problem[1]}")
    no_body = body_problem(img)  # noise, a single hot pixel
    if no_body:
        raise DicomReadError(path, f"the frame shows no whole body: {no_body}")
    if img.shape != (NROWS, NCOLS):
        raise DicomReadError(path, f"a frame of {img.shape[0]} x {img.shape[1]} pixels; the "
                                   f"phantom renders {NROWS} x {NCOLS}")  # fmt: skip
    try:
        anatomy = decide_view(img)
    except ValueError as err:  # no body outline to measure
        raise DicomReadError(path, str(err)) from None
    header = next(iter(marked)) if frames.shape[0] == 1 and len(marked) == 1 else None
    if view != "auto":
        chosen, how = view, "stated with --view"
    elif header:
        chosen, how = header, "named in the header"
    else:
        chosen, how = anatomy.view, "the header names no view: decided from the anatomy"
    if chosen != anatomy.view:
        how += f"; note: the anatomy suggests {anatomy.view}"
    source = (f"{ds.get('Manufacturer', '?')} {ds.get('ManufacturerModelName', '')}".strip()
              + f", {frames.shape[0]} frame(s) of {img.shape[0]} x {img.shape[1]}, "
              f"{img.sum():.3g} counts in the frame compared")  # fmt: skip
    return img, dataclasses.replace(anatomy, view=chosen), how, source


@command("phantom.realism")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.ref.is_dir():
        return folder_main(args)
    check_output_dir(args.out, "realism report")
    check_outside_scan_folders(args.out, "realism report", [args.ref])  # the scan's folder
    args.subjects = args.subjects or SUBJECTS["file"]
    img, decision, how, source = load_reference(args.ref, args.view)
    rows = write_report(args.out, img, decision, how, args.subjects, args.seed, source)
    n_in = sum(r["inside"] for r in rows)
    print(f"{decision.view} view ({how}); {n_in} of {len(rows)} measures inside the phantom's "
          f"5-95% range; wrote {args.out}/realism.md", file=sys.stderr)  # fmt: skip
    return 0


def folder_main(args: argparse.Namespace) -> int:
    """A folder of real views: the coverage report (``population``)."""
    check_output_dir(args.out, "realism report")
    check_outside_scan_folders(args.out, "realism report", [args.ref / "x"])  # the folder
    found = read_folder(args.ref, None if args.view == "auto" else args.view)
    if not found.views:
        why = "; ".join(sorted({r for _, r in found.skipped})[:3]) or "it holds no files"
        raise RealismInputError(f"{args.ref}: no real view to compare ({found.files} files "
                                f"looked at; {why})")  # fmt: skip
    report = compare_folder(found, args.subjects or SUBJECTS["folder"], args.seed)
    write_folder_report(args.out, report)
    for view, v in report["views"].items():
        rows = [r for r in v["measures"] if r["shape"]]
        worst = min(rows, key=lambda r: r["share"])
        print(f"{view}: {v['real_views']} real views; inside the phantom's 1-99% range on all "
              f"{len(rows)} shape measures: {v['inside_all_shape_measures']}; lowest share "
              f"{worst['share']:.0%} ({worst['measure']}); anatomy score median real "
              f"{v['anatomy_score']['real_median']:+.2f}, phantom "
              f"{v['anatomy_score']['phantom_median']:+.2f}", file=sys.stderr)  # fmt: skip
    if found.skipped:
        print(f"skipped {len(found.skipped)} of {found.files} files (see realism.md)",
              file=sys.stderr)
    print(f"wrote {args.out}/realism.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
