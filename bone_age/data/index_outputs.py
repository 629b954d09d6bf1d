"""What an index writes: the pseudonymous links (or copies) in ``links/``, the manifest, the
per-file report, the owner's link file and the contact sheet of views decided from the anatomy,
all or nothing.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from bone_age.data.contact_sheet import Tile, contact_sheet_png
from bone_age.data.dicom import (
    VIEWS,
    DicomReadError,
    View,
    pixel_counts,
    read_dataset,
    read_view,
)
from bone_age.data.identifiers import PathChecker
from bone_age.data.index_result import WRITTEN, IndexResult, StudyRow, anatomy_studies
from bone_age.data.manifest import REQUIRED_COLUMNS, SITE_COLUMN
from bone_age.data.pseudonym import SUBJECT_PREFIX
from bone_age.utils.outputs import remove_stale_temps, replace, temp_path
from bone_age.utils.tables import csv_text

MANIFEST_COLUMNS = [*REQUIRED_COLUMNS, "study", SITE_COLUMN]
REPORT_COLUMNS = ["file", "status", "study", "subject_id", "view", "view_from", "view_margin",
                  "names_patient", "reason"]
SPLIT_DIR = "split"
LINKS_DIR = "links"
# Beside the manifest: the studies whose view the anatomy decided, for a person to check.
CONTACT_SHEET = ".anatomy_views.png"  # after the manifest's name: M.csv -> M.anatomy_views.png


def contact_sheet_path(manifest: Path) -> Path:
    """The contact sheet of a manifest: named after it, so that the index replaces or removes
    only a sheet of its own manifest, never a user's file."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + CONTACT_SHEET)


def _shown(text: str) -> str:
    """A path as UTF-8 can hold it (a file name that is not valid UTF-8 keeps its bytes as
    backslash escapes instead of failing the whole write)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def link_names(result: IndexResult) -> dict[Path, str]:
    """The pseudonymous name of each export file the manifest uses: ``<subject_id>.dcm`` for a
    file holding both views, ``<subject_id>_<view>.dcm`` otherwise."""
    names: dict[Path, str] = {}
    for s in result.written:
        files = {s.views[v] for v in VIEWS}
        for view in VIEWS:
            path = s.views[view]
            if path.parent.name == SPLIT_DIR and path.name.startswith(s.key):
                continue  # halves written by the index: pseudonymous already
            names[path] = f"{s.subject_id}.dcm" if len(files) == 1 else \
                f"{s.subject_id}_{view}.dcm"
    return names


def manifest_text(result: IndexResult, base: Path, links: dict[Path, Path]) -> str:
    """The manifest: pseudonyms, labels and paths (links) relative to the manifest's folder."""
    def rel(path: Path) -> str:
        return Path(os.path.relpath(links.get(path, path), base)).as_posix()

    return csv_text(MANIFEST_COLUMNS, [{
        "subject_id": s.subject_id, "age": "" if s.age is None else f"{s.age:g}", "sex": s.sex,
        **{v: rel(s.views[v]) for v in VIEWS}, "study": s.key, SITE_COLUMN: s.site,
    } for s in result.written])


def report_text(result: IndexResult) -> str:
    """One row per path below the export, in path order."""
    study_of = {id(i): s for s in result.studies for i in s.files}
    rows = []
    for inst in result.instances:
        row = study_of.get(id(inst))
        rows.append({"file": _shown(inst.rel), "status": inst.status,
                     "study": row.key if row else "",
                     "subject_id": row.subject_id if row and row.status in WRITTEN else "",
                     "view": "+".join(v for v in VIEWS if v in inst.views) if row else "",
                     "view_from": inst.view_from if row else "",
                     "view_margin": "" if inst.view_margin is None or not row
                     else f"{inst.view_margin:.3f}",
                     "names_patient": "yes" if inst.rel in result.patient_paths else "",
                     "reason": _shown(inst.reason)})
    # A plain CSV (pandas, csv.DictReader, spreadsheets read it as is): the note on whether
    # paths name patients is printed by summary() instead.
    return csv_text(REPORT_COLUMNS, rows)


def link_file_text(result: IndexResult) -> str:
    """For the data owner only: pseudonym -> Patient ID of every written subject."""
    pairs = {s.subject_id: s.patient_id for s in result.written}
    return csv_text(["subject_id", "patient_id"],
                     [{"subject_id": k, "patient_id": v} for k, v in sorted(pairs.items())])


def is_links_dir(path: Path) -> bool:
    """True when ``path`` is absent or holds only what the index writes there (so that a
    re-run may replace it)."""
    if not os.path.lexists(path):
        return True
    if path.is_symlink() or not path.is_dir():
        return False
    return all(e.name.startswith(SUBJECT_PREFIX) and e.name.endswith(".dcm")
               and not e.is_dir(follow_symlinks=False) for e in os.scandir(path))


def _place(src: Path, dst: Path, copy: bool, checker: PathChecker) -> str:
    """Put export file ``src`` at ``dst``; returns how ("hard link", "copy", "symbolic link").

    A hard link stores no path, so it is tried first; a symbolic link would store the export's
    absolute path (the folders above the export included), so where that path names a patient
    the file is copied instead.
    """
    target = src.resolve()
    if not copy:
        try:
            os.link(target, dst)
            return "hard link"
        except OSError:  # another file system, or a file the user may not link
            pass
        if not checker.names_patient(target.as_posix()):
            os.symlink(target, dst)
            return "symbolic link"
    shutil.copyfile(target, dst)
    return "copy"

def _view_counts(row: StudyRow, view: View) -> np.ndarray | None:
    """One view's counts read back for the contact sheet; None where that fails (the sheet
    shows a grey box: it must never stop the index)."""
    try:
        inst = next(i for i in row.files if view in i.views)
        if inst.side_by_side:
            return read_view(row.views[view], view)
        return pixel_counts(read_dataset(inst.path), inst.rel)[inst.views[view][0]]
    except (DicomReadError, StopIteration, IndexError, OSError, ValueError):
        return None


def contact_sheet(result: IndexResult) -> bytes | None:
    """The PNG of every study whose view the anatomy decided (pseudonym and views only), or
    None when there is none."""
    tiles = []
    for row in anatomy_studies(result):
        how = {v: next((i.view_from for i in row.files if v in i.views), "") for v in VIEWS}
        tiles.append(Tile(row.subject_id, [(v, how[v], _view_counts(row, v)) for v in VIEWS]))
    return contact_sheet_png(tiles) if tiles else None


def write_outputs(result: IndexResult, manifest: Path, report: Path,
                  link_file: Path | None = None, copy_files: bool = False,
                  links_dir: Path | None = None) -> Counter:
    """Write the links (or copies), manifest, report and link file, all or nothing; returns
    how many files of links/ are hard links, copies and symbolic links.

    Everything is first written under temporary names beside its target, then renamed into
    place (atomic per file on POSIX): an error leaves no half-written output behind.
    """
    manifest, report = Path(manifest).absolute(), Path(report).absolute()
    base = manifest.parent
    links_dir = Path(links_dir).absolute() if links_dir else base / LINKS_DIR
    names = link_names(result)
    temps: list[Path] = []
    # What a killed run left (links staged with full headers, half-written texts) goes first.
    folders = {base, report.parent}
    if link_file is not None:
        folders.add(Path(link_file).absolute().parent)
    for folder in folders:
        remove_stale_temps(folder)
    try:
        staged_links = temp_path(links_dir, keep_suffix=False)
        temps.append(staged_links)
        links: dict[Path, Path] = {}
        placed: Counter = Counter()
        if names:
            staged_links.mkdir(parents=True)
            for src, name in names.items():
                placed[_place(src, staged_links / name, copy_files, result.checker)] += 1
                links[src] = links_dir / name
        # The umask applies; a report naming patients is owner-only, like the link file.
        texts = [(manifest, manifest_text(result, base, links), 0o666),
                 (report, report_text(result), 0o600 if result.patient_paths else 0o666)]
        if link_file is not None:
            texts.append((Path(link_file).absolute(), link_file_text(result), 0o600))
        staged = []
        for target, text, mode in texts:
            tmp = temp_path(target, keep_suffix=False)
            target.parent.mkdir(parents=True, exist_ok=True)
            temps.append(tmp)
            # Created with its final mode: the link file is owner-only before any ID is in it.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            staged.append((tmp, target))
        sheet, png = contact_sheet_path(manifest), contact_sheet(result)
        if png is not None:
            tmp = temp_path(sheet, keep_suffix=False)
            temps.append(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as f:
                f.write(png)
            staged.append((tmp, sheet))
        if os.path.lexists(links_dir):
            if not is_links_dir(links_dir):
                raise OSError(errno.EEXIST, "holds files the index did not write", links_dir)
            old = temp_path(links_dir.with_name(links_dir.name + "-old"), keep_suffix=False)
            temps.append(old)
            os.replace(links_dir, old)
        if names:
            os.replace(staged_links, links_dir)
        for tmp, target in staged:
            replace(tmp, target)
        if png is None and sheet.is_file() and not sheet.is_symlink():
            sheet.unlink()  # an earlier run's sheet would show studies this run did not decide
        return placed
    finally:
        for tmp in temps:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            elif os.path.lexists(tmp):
                tmp.unlink()
