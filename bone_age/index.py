"""python -m bone_age.index DICOM_DIR --out manifest.csv: a DICOM export -> a safe manifest.

Writes the manifest (pseudonymous subject ids, labels, paths of pseudonymous links in
``links/``), ``index_report.csv`` (every path below the export with a status and reason) beside
it, and prints a summary. See bone_age/data/index_result.py (STATUSES) for the statuses. Exit codes:
0 when every study was written, 1 when any was left out (or none written; each file's reason
is in the report), 2 for bad arguments (one line on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bone_age.data.dicom import VIEWS, View
from bone_age.data.index_outputs import (
    LINKS_DIR,
    contact_sheet_path,
    is_links_dir,
    write_outputs,
)
from bone_age.data.index_result import exit_code
from bone_age.data.index_studies import index_folder
from bone_age.data.index_summary import summary
from bone_age.data.pseudonym import (
    DEFAULT_KEY_FILE,
    Pseudonymizer,
    check_secret_location,
    load_or_create_key,
)
from bone_age.utils.arguments import ArgumentParser, finite_float
from bone_age.utils.console import plural
from bone_age.utils.errors import BoneAgeError, command, fail
from bone_age.utils.outputs import (
    OutputError,
    check_not_input,
    check_output_file,
    stale_temp_folders,
)

T = TypeVar("T")


class UsageError(BoneAgeError):
    """A bad command-line value (one line, exit 2)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bone_age.index", description=__doc__.split("\n")[0])
    p.add_argument("dicom_dir", type=Path, help="folder of DICOM files (searched recursively)")
    p.add_argument("--out", type=Path, default=Path("manifest.csv"), help="manifest to write")
    p.add_argument("--report", type=Path, help="per-file report (default: index_report.csv "
                                               "beside the manifest)")
    p.add_argument("--key-file", type=Path, default=DEFAULT_KEY_FILE,
                   help="secret pseudonym key, created (0600) on first use; keep it outside "
                        "the repository and outputs (default: %(default)s)")
    p.add_argument("--link-file", type=Path, help="also write subject_id -> Patient ID here, "
                                                  "for the data owner only (never by default)")
    p.add_argument("--copy-files", action="store_true",
                   help=f"copy the used files into {LINKS_DIR}/ beside the manifest instead of "
                        "hard- or symbolically linking them (for outputs that must travel "
                        "without the export; the copies keep their DICOM headers, patient "
                        "identity included)")
    p.add_argument("--links-dir", type=Path,
                   help=f"folder for the pseudonymous links (default: {LINKS_DIR}/ beside the "
                        "manifest). The links are the export's files, DICOM headers (patient "
                        "identity) included: put them e.g. beside the export, so that the "
                        "manifest's folder can be shared without them")
    p.add_argument("--split-side-by-side", action="store_true",
                   help="split a single NM image holding both whole-body views: left half "
                        "anterior, right half posterior (written as new files under split/ "
                        "beside the manifest)")
    p.add_argument("--view", action="append", default=[], metavar="[FOLDER=]VIEW",
                   help="anterior or posterior: the view of every single-frame file whose "
                        "headers name none (a folder of one view; two-frame files: --frames); "
                        "FOLDER=VIEW (repeatable) "
                        "limits it to a folder below the export. Without it such files are "
                        "decided from their anatomy (see index_report.csv's view_from and "
                        "view_margin)")
    p.add_argument("--frames", action="append", default=[], metavar="[FOLDER=]VIEW,VIEW",
                   help="anterior,posterior or posterior,anterior: the views of the first and "
                        "second frame of every two-frame file whose headers name none; "
                        "FOLDER=VIEW,VIEW (repeatable) limits it to a folder below the export. "
                        "Without it such files are decided from their anatomy (the two frames "
                        "compared)")
    p.add_argument("--follow-links-outside", action="store_true",
                   help="follow symbolic links that lead outside the export folder (by "
                        "default they are reported as outside_export and not read)")
    p.add_argument("--no-check-pixels", dest="check_pixels", action="store_false",
                   help="skip decoding the chosen views (faster; damaged, all-zero or negative "
                        "pixels are then only found at training time)")
    p.add_argument("--age-range", type=finite_float, nargs=2, default=(40.0, 80.0),
                   metavar=("MIN", "MAX"), help="ages outside are reported (and kept)")
    return p.parse_args(argv)


def _stated_views(given: list[str], root: Path) -> dict[str, View]:
    """--view values as {folder relative to the export ("" for all of it): view}.

    A bare VIEW is the whole export; FOLDER=VIEW names a real folder strictly below it, however
    spelled (``ant/``, ``./ant``, ``post/../ant``, in full): each is normalised to one key, so
    two spellings of one folder with two views are refused, never one silently dropped, and a
    FOLDER that is the export itself (``.``, ``ant/..``, the export's path, empty) or lies
    outside it is refused, never taken as the whole export.
    """
    def view_of(text: str) -> View | None:
        view = text.strip().lower()
        return view if view in VIEWS else None  # type: ignore[return-value]

    return _by_folder("--view", given, root, view_of,
                      "anterior or posterior, or FOLDER=anterior / FOLDER=posterior")


def _stated_frames(given: list[str], root: Path) -> dict[str, tuple[View, View]]:
    """--frames values as {folder relative to the export: (first frame's view, second's)},
    folders as --view takes them."""
    def frames_of(text: str) -> tuple[View, View] | None:
        views = tuple(v.strip().lower() for v in text.split(","))
        return views if sorted(views) == sorted(VIEWS) else None  # type: ignore[return-value]

    return _by_folder("--frames", given, root, frames_of,
                      "anterior,posterior or posterior,anterior (the first frame's view "
                      "first), or FOLDER=anterior,posterior")


def _by_folder(option: str, given: list[str], root: Path, parse: Callable[[str], T | None],
               expected: str) -> dict[str, T]:
    """[FOLDER=]VALUE options as {folder relative to the export ("" for all of it): value}."""
    stated: dict[str, T] = {}
    base = root.resolve()
    for text in given:
        folder, equals, value = text.rpartition("=")
        parsed = parse(value)
        if parsed is None:
            raise UsageError(f"{option} {text}: expected {expected}")
        if equals:
            folder = _folder_below(option, text, folder, root, base)
        if stated.get(folder, parsed) != parsed:
            raise UsageError(f"{option} {text}: {folder or 'the export'} given two "
                             f"{'views' if option == '--view' else 'frame orders'}")
        stated[folder] = parsed
    return stated


def _folder_below(option: str, text: str, folder: str, root: Path, base: Path) -> str:
    """FOLDER of ``--view FOLDER=VIEW`` as a path relative to the export (``a/b``), the key
    the indexer matches files by; UsageError unless it is a folder strictly below the export."""
    refused = UsageError(f"{option} {text}: {folder!r} is not a folder below {root}")
    if not folder.strip():
        raise refused
    try:
        top = Path(os.path.normpath(root.absolute()))
        path = Path(os.path.normpath(top / folder))  # `..` taken as written: ant/.. is the export
        if path != top and path.is_relative_to(top) and path.is_dir():
            return path.relative_to(top).as_posix()
        real = path.resolve()  # the export named in full by another path (a link to it)
        if Path(folder).is_absolute() and real != base and real.is_relative_to(base) \
                and real.is_dir():
            return real.relative_to(base).as_posix()
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a name too long, a loop of links
        pass
    raise refused


def _outputs(args: argparse.Namespace) -> tuple[Path, Path, Path | None]:
    """The output files, checked before any work (OutputError names the option and path)."""
    export = [args.dicom_dir]  # an output there could replace a scan
    out = check_output_file(args.out, "manifest (--out)", input_dirs=export).absolute()
    report = check_output_file(args.report or out.parent / "index_report.csv",
                               "index report (--report)", input_dirs=export).absolute()
    link = (check_output_file(args.link_file, "link file (--link-file)",
                              input_dirs=export).absolute() if args.link_file else None)
    if report == out or link in (out, report):
        raise OutputError(f"{report if report == out else link}: given for two outputs")
    links = (args.links_dir or out.parent / LINKS_DIR).absolute()
    check_not_input(links, "links folder (--links-dir)", [], input_dirs=export)
    if not is_links_dir(links):
        option = "--links-dir" if args.links_dir else "--out"
        raise OutputError(f"{option} {links}: holds files the index did not write; move "
                          f"them or choose another {option} folder")
    args.links_dir = links
    return out, report, link


@command("index")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dicom_dir.is_dir():
        return fail("index", f"{args.dicom_dir} is not a folder")
    low, high = args.age_range
    if not 0 <= low < high <= 150:
        return fail("index", f"--age-range {low:g} {high:g}: MIN and MAX must be ages in years "
                             "with 0 <= MIN < MAX <= 150, e.g. --age-range 40 80")
    stated = _stated_views(args.view, args.dicom_dir)
    frames = _stated_frames(args.frames, args.dicom_dir)
    out, report, link_file = _outputs(args)
    outputs = [out.parent, args.dicom_dir, args.links_dir]
    key_file = check_secret_location(args.key_file, outputs, "pseudonym key file")
    if link_file:
        check_secret_location(link_file, outputs, "link file")
    pseudo = Pseudonymizer(load_or_create_key(key_file))
    result = index_folder(args.dicom_dir, out, pseudo, args.split_side_by_side,
                          args.check_pixels, tuple(args.age_range), skip=[report],
                          stated_views=stated, links_dir=args.links_dir,
                          follow_outside=args.follow_links_outside, secrets=[key_file],
                          stated_frames=frames, progress=True)
    try:
        placed = write_outputs(result, out, report, link_file, args.copy_files,
                               args.links_dir)
    except OSError as err:
        return fail("index", f"cannot write the outputs ({err}); nothing written")
    print(summary(result, contact_sheet_path(out)))
    if placed:
        print(f"{args.links_dir}: " + ", ".join(f"{how}: {n}" for how, n in sorted(placed.items()))
              + ". These are the export's files, DICOM headers (patient names, IDs, birth "
              "dates) included: share this folder only with whoever may see them (--links-dir "
              "puts it elsewhere, e.g. beside the export)")
    for left in stale_temp_folders(args.links_dir.parent):  # never removed: told, once each
        print(f"bone-age index: note: {left}: a folder that a killed run seems to have left "
              "(staged links: scans with full headers); delete it if no run is using it",
              file=sys.stderr)
    print(f"manifest: {out}\nreport:   {report}")
    if link_file:  # the one output that holds Patient IDs: never written without a word
        print(f"link file: {link_file} (subject_id -> Patient ID of "
              f"{plural(len(result.written), 'subject')}, owner-only: for the data owner, "
              "never to be shared with the manifest)")
    return exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
