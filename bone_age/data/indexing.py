"""Index a DICOM export (e.g. from a PACS) into a pseudonymous manifest and a per-file report.

Grouping reads headers only; pixels are decoded only to check the chosen views (optional) or to
split a side-by-side image. Every path below the export folder gets exactly one report row with
a status (see STATUSES). Whatever goes wrong with one file becomes that file's status: an index
run never stops at a bad file.

Reasons name the file (relative to the DICOM folder) and the pseudonymous study key, never a
patient attribute. The export's own paths may name patients; the report (for the data owner)
says so in its first line, and the manifest never holds them: it points to pseudonymous links
(or copies) named after the subject, in ``links/`` beside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom

from bone_age.data.anatomy import (
    PAIR_MARGIN,
    SINGLE_MARGIN,
    ViewDecision,
    decide_pair,
)
from bone_age.data.contact_sheet import Tile, contact_sheet_png
from bone_age.data.dicom import (
    VIEWS,
    DicomReadError,
    View,
    count_problem,
    pixel_counts,
    read_dataset,
    read_view,
    shown_code,
    values,
)
from bone_age.data.identifiers import PathChecker
from bone_age.data.instances import Instance, classify, decide_frames, frame_decision
from bone_age.data.labels import study_age, study_sex, study_site, trainable_age
from bone_age.data.manifest import REQUIRED_COLUMNS, SITE_COLUMN
from bone_age.data.pseudonym import SUBJECT_PREFIX, KeyFileError, Pseudonymizer
from bone_age.data.sidebyside import split_halves, write_view_file
from bone_age.utils.console import plural
from bone_age.utils.console import progress as progress_display
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL
from bone_age.utils.files import kind
from bone_age.utils.outputs import remove_stale_temps, replace, temp_path
from bone_age.utils.tables import csv_text

# Beside the manifest: the studies whose view the anatomy decided, for a person to check.
CONTACT_SHEET = ".anatomy_views.png"  # after the manifest's name: M.csv -> M.anatomy_views.png


def contact_sheet_path(manifest: Path) -> Path:
    """The contact sheet of a manifest: named after it, so that the index replaces or removes
    only a sheet of its own manifest, never a user's file."""
    manifest = Path(manifest)
    return manifest.with_name(manifest.stem + CONTACT_SHEET)
MANIFEST_COLUMNS = [*REQUIRED_COLUMNS, "study", SITE_COLUMN]
REPORT_COLUMNS = ["file", "status", "study", "subject_id", "view", "view_from", "view_margin",
                  "names_patient", "reason"]
WRITTEN = ("ok", "no_age", "age_out_of_range", "unknown_sex")
SPLIT_DIR = "split"
LINKS_DIR = "links"
_SUFFIX = {"anterior": "ANT", "posterior": "POST"}
T = TypeVar("T")
# Studies from which the index shows progress: deciding views from the anatomy takes about a
# quarter of a second per study (2 shared cores), so 120 studies would be 30 s of silence.
PROGRESS_FROM = 20
SEX_SHOWN = frozenset({"F", "M", "O"})  # Patient's Sex codes a reason may quote

# Every status of the report, with its meaning (the README lists these).
STATUSES = {
    # a study that is written to the manifest (the last three are warnings)
    "ok": "written to the manifest",
    "no_age": "written with an empty age: no usable Patient's Age or birth and study dates "
              "(can be predicted, not trained on)",
    "age_out_of_range": "written with its age, which lies outside --age-range (training "
                        "leaves it out and says so)",
    "unknown_sex": "written with an empty sex: Patient's Sex is not F or M",
    # a path that gives no view
    "unreadable_folder": "a folder that cannot be listed (e.g. permission denied); its "
                         "contents are unknown",
    "broken_link": "a symbolic link whose target is missing or loops",
    "link_loop": "a link to a folder that contains it (not followed)",
    "not_a_file": "a FIFO, socket or device: not read",
    "own_output": "an output of this index (manifest, report, links/, split/) inside the export "
                  "or reached through a link: not read",
    "outside_export": "a symbolic link leading outside the export: not followed (unless "
                      "--follow-links-outside)",
    "dicomdir": "a DICOMDIR index file",
    "not_dicom": "not a DICOM file",
    "unreadable": "a damaged or truncated file, or a header value that cannot be used",
    "duplicate": "the same SOP Instance UID as another file (or a folder reached twice), "
                 "which is used instead",
    "unsupported_modality": "not NM (or an NM-like secondary capture)",
    "unsupported_image": "a colour image, one larger than any whole-body scan, or one not "
                         "shaped like a whole-body view",
    "no_pixels": "no pixel data",
    "view_unknown": "no anterior or posterior view named in its headers, none given with "
                    "--view (one frame) or --frames (two frames), and the anatomy not sure",
    "not_side_by_side": "with --split-side-by-side: an image that is not NM or not shaped "
                        "like two whole-body views side by side, so not split",
    # a study that is not written (every file of it gets the status)
    "incomplete_study": "the anterior or the posterior view is missing",
    "ambiguous_view": "two files, or two frames of one file, claim the same view",
    "inconsistent_study": "its files carry different Patient IDs",
    "no_patient_id": "no Patient ID to derive a pseudonym from",
    "empty_image": "a view is all zero or not finite",
    "negative_counts": "a view has pixels below zero: not raw counts (processed, or read "
                       "with the wrong sign); refused rather than clipped",
    "repeat_study": "a later study of a subject already written (one study per subject)",
}


# Statuses of a path that holds no scan of its own (or one used through another path): leaving
# it out loses no study. Every other status not WRITTEN is a study (or a file that may hold
# one) left out, which makes every command that reads an export exit 1 (docs/errors.md).
NO_STUDY = frozenset({"dicomdir", "not_dicom", "own_output", "duplicate", "link_loop",
                      "not_a_file", "unsupported_modality"})


@dataclass
class LeftOut:
    """A study left out, named by its pseudonyms (or a file that may hold a study, whose
    header gave none: ``study`` empty), and why."""

    subject_id: str  # BA-... where a Patient ID was read, else ""
    study: str  # ST-... where a Study Instance UID was read, else ""
    reason: str
    files: int = 1


@dataclass
class StudyRow:
    key: str  # pseudonymous study key
    files: list[Instance]
    views: dict[View, Path] = field(default_factory=dict)
    subject_id: str = ""
    patient_id: str = ""  # only ever written to the owner's link file
    date: str = ""
    age: float | None = None
    sex: str = ""
    site: str = ""  # pseudonym
    status: str = ""
    reason: str = ""


@dataclass
class IndexResult:
    instances: list[Instance]
    studies: list[StudyRow]
    seconds: float
    patient_paths: set[str] = field(default_factory=set)  # relative paths naming a patient
    checker: PathChecker = field(default_factory=PathChecker)  # the export's identifiers
    left_out: list[LeftOut] = field(default_factory=list)  # studies not written, and why

    @property
    def written(self) -> list[StudyRow]:
        return sorted((s for s in self.studies if s.status in WRITTEN),
                      key=lambda s: s.subject_id)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk(root: Path, skip: Sequence[Path], follow_outside: bool = False,
          secrets: Sequence[Path] = ()) -> Iterator[Instance]:
    """Every path under root as an Instance: plain files (and links to them) to classify, and
    the rest already failed with their status, so that none goes unreported.

    os.scandir rather than os.walk: each entry's type (link, folder, FIFO...) is needed, and a
    folder that cannot be listed must become a row, not a skipped subtree. Links to folders are
    followed, except into a folder already walked (a loop, or the same folder twice), and a
    link leading outside the export only with ``follow_outside`` (a link to / would index the
    whole machine). Outputs of the index and the secrets (the key) are never read, reached
    however: compared by their real paths, so a link to the output folder is no way in.
    """
    outputs = {os.path.normpath(p) for p in skip}
    real_outputs = {os.path.realpath(p) for p in skip}
    # The folders the outputs are written in (manifest, report): a link to one is no way in.
    output_folders = {os.path.realpath(os.path.dirname(p)) for p in skip
                      if os.path.isfile(p) or not os.path.exists(p)}
    real_secrets = {os.path.realpath(p) for p in secrets}
    real_root = os.path.realpath(root)
    root_stat = root.stat()
    walked = {(root_stat.st_dev, root_stat.st_ino)}
    stack: list[tuple[Path, str, frozenset]] = [(root, "", frozenset(walked))]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as err:
            rel = prefix.rstrip("/") or "."
            yield Instance(folder, rel).fail(
                "unreadable_folder",
                f"{rel}: folder cannot be listed ({err.strerror or type(err).__name__})")
            continue
        folders = []
        for entry in entries:
            path, rel = Path(entry.path), prefix + entry.name
            inst = Instance(path, rel)
            real = os.path.realpath(entry.path)
            if os.path.normpath(entry.path) in outputs or real in real_outputs or \
                    (entry.is_symlink() and real in output_folders):
                yield inst.fail("own_output", f"{rel}: written by this index, not indexed")
                continue
            if entry.is_symlink() and any(_inside(key, real) for key in real_secrets):
                # Whoever copies the export following its links would copy the key too.
                raise KeyFileError(f"{next(iter(secrets))}: the pseudonym key file is reachable "
                                   "through a symbolic link inside the export; move the key or "
                                   "remove the link")
            if entry.is_symlink() and not follow_outside and not _inside(real, real_root) \
                    and os.path.lexists(real):
                yield inst.fail("outside_export", f"{rel}: symbolic link leading outside the "
                                                  "export; not followed (--follow-links-outside "
                                                  "to index it)")
                continue
            try:
                st = os.stat(path)  # follows links
            except OSError as err:
                if entry.is_symlink():
                    why = "loops" if err.errno == errno.ELOOP else "points to nothing"
                    yield inst.fail("broken_link", f"{rel}: symbolic link that {why}")
                else:
                    yield inst.fail("unreadable", f"{rel}: cannot be read "
                                                  f"({err.strerror or type(err).__name__})")
                continue
            if stat.S_ISDIR(st.st_mode):
                ident = (st.st_dev, st.st_ino)
                if ident in ancestors:
                    yield inst.fail("link_loop", f"{rel}: link to a folder that contains it; "
                                                 "not followed")
                elif ident in walked:
                    yield inst.fail("duplicate", f"{rel}: a folder already indexed through "
                                                 "another path; not indexed twice")
                else:
                    walked.add(ident)
                    folders.append((path, rel + "/", ancestors | {ident}))
            elif stat.S_ISREG(st.st_mode):
                yield inst
            else:
                yield inst.fail("not_a_file", f"{rel}: {kind(st.st_mode)}; not read")
        stack.extend(reversed(folders))  # popped in name order


def stated_view(rel: str, stated: dict[str, T] | None) -> T | None:
    """The view --view (or the frames' views --frames) gives a path below the export: that of
    the deepest folder holding it."""
    found = [(len(folder), n) for n, folder in enumerate(stated or {})
             if not folder or rel.startswith(folder.rstrip("/") + "/")]
    return list(stated.values())[max(found)[1]] if stated and found else None


def _mark_duplicates(instances: list[Instance]) -> None:
    first: dict[str, Instance] = {}
    for inst in instances:
        if inst.status or not inst.sop_uid:
            continue
        if inst.sop_uid in first:
            inst.fail("duplicate", f"{inst.rel}: same SOP Instance UID as "
                                   f"{first[inst.sop_uid].rel}, which is used instead")
        else:
            first[inst.sop_uid] = inst


def _set_view(inst: Instance, view: View, margin: float) -> None:
    inst.views, inst.view_from, inst.view_margin, inst.unlabelled = \
        {view: [0]}, "anatomy", round(margin, 3), ""


def _anatomy_views(row: StudyRow) -> None:
    """Give each unlabelled single frame of a study its view from the anatomy, or fail it as
    ``view_unknown`` (and leave it out of the study) when the anatomy is not sure enough.

    An unlabelled file of two frames holds the study's two views: its frames are compared with
    each other (decide_frames), by the same rule as two single frames of one study.
    Two frames of one study are decided together (the higher score is the anterior, see
    data/anatomy.py); one unlabelled frame beside one whose header names its view is decided
    with it (and must agree with that header); a frame alone needs SINGLE_MARGIN.
    """
    for inst in [i for i in row.files if i.unlabelled and i.frames == 2]:
        why = decide_frames(inst)  # its two frames compared with each other
        if why:
            inst.fail("view_unknown", f"{inst.unlabelled}; {why}")
    row.files = [i for i in row.files if not i.status]
    unlabelled = [i for i in row.files if i.unlabelled]
    if not unlabelled:
        return
    labelled = [i for i in row.files if not i.unlabelled and len(i.views) == 1
                and sum(map(len, i.views.values())) == 1 and not i.side_by_side]
    others = [i for i in row.files if not i.unlabelled and i not in labelled]
    decided: dict[int, ViewDecision] = {}
    failed: dict[int, str] = {}
    pool = unlabelled + (labelled if len(unlabelled) == 1 and len(labelled) == 1
                         and not others else [])
    for inst in pool:
        found = frame_decision(inst)
        (decided if isinstance(found, ViewDecision) else failed)[id(inst)] = found
    if len(pool) == 2 and not failed and not others:
        a, b = pool
        views = decide_pair(decided[id(a)], decided[id(b)])
        if views[2] < PAIR_MARGIN:
            failed.update({id(i): f"its anatomy cannot tell the two frames of study {row.key} "
                                  f"apart (score difference {views[2]:.2f} < {PAIR_MARGIN})"
                           for i in unlabelled})
        elif b in labelled and views[1] not in b.views:
            failed[id(a)] = (f"its anatomy says {views[0]} but {b.rel}, named "
                             f"{next(iter(b.views))} in its header, reads as the same view")
        else:
            for inst, view in ((a, views[0]), (b, views[1])):
                if inst.unlabelled:
                    _set_view(inst, view, views[2])
    else:
        for inst in unlabelled:
            d = decided.get(id(inst))
            if d is not None and abs(d.score) >= SINGLE_MARGIN:
                _set_view(inst, d.view, abs(d.score))
            elif d is not None:
                failed[id(inst)] = (f"no view in its headers, and its anatomy alone is not sure "
                                    f"(suggests {d.view}, score {d.score:+.2f}; needs "
                                    f"|score| >= {SINGLE_MARGIN} alone, or the study's other "
                                    "view beside it): state it with --view")
    for inst in unlabelled:
        if inst.unlabelled:
            why = failed.get(id(inst), "its study gives no frame to compare it with")
            inst.fail("view_unknown", f"{inst.unlabelled}; {why}")
    row.files = [i for i in row.files if not i.status]


def _fail_study(row: StudyRow, status: str, why: str) -> StudyRow:
    row.status, row.reason = status, why
    for inst in row.files:
        inst.fail(status, f"{inst.rel}: study {row.key} not written: {why}")
    return row


def _assemble(row: StudyRow) -> dict[View, Instance] | None:
    """The one instance giving each view, or None after failing the study. Each frame marked
    with a view is a candidate: two files or two frames of one file claiming it are ambiguous."""
    for view in VIEWS:
        found = [(i, f) for i in row.files for f in i.views.get(view, [])]
        if len(found) > 1:
            listed = ", ".join(i.rel if len(i.views[view]) == 1 else f"{i.rel} frame {f + 1}"
                               for i, f in found)
            _fail_study(row, "ambiguous_view", f"{len(found)} candidate {view} views ({listed})")
            return None
    missing = [v for v in VIEWS if not any(v in i.views for i in row.files)]
    if missing:
        _fail_study(row, "incomplete_study", f"no {' or '.join(missing)} view found")
        return None
    # Only the instances that give a view belong to the written study.
    chosen = {v: next(i for i in row.files if v in i.views) for v in VIEWS}
    row.files = list(dict.fromkeys(chosen.values()))
    return chosen


def _pixels(row: StudyRow, chosen: dict[View, Instance], split_dir: Path, check: bool) -> bool:
    """Decode the chosen views (always for a side-by-side image or a two-frame file whose views
    its headers do not name: each view is written as a file of its own, named in its header,
    which every reader of the manifest understands)."""
    for inst in row.files:
        if not (check or inst.side_by_side or inst.split_frames):
            continue
        try:
            ds = read_dataset(inst.path)
            if inst.side_by_side:
                views = split_halves(pixel_counts(ds, inst.rel)[0])
            elif inst.split_frames:
                frames = pixel_counts(ds, inst.rel)
                views = {v: frames[f[0]] for v, f in inst.views.items()}
            else:
                views = {v: read_view(inst.rel, v, ds) for v, i in chosen.items() if i is inst}
        except DicomReadError as err:
            _fail_study(row, "unreadable", f"{inst.rel}: {err.reason}")
            return False
        for view, counts in views.items():
            problem = count_problem(counts)
            if problem:
                _fail_study(row, problem[0], f"the {view} view {problem[1]}")
                return False
            if inst.side_by_side or inst.split_frames:
                path = split_dir / f"{row.key}_{_SUFFIX[view]}.dcm"
                write_view_file(counts, path, view, row.key,
                                "half of a side-by-side image" if inst.side_by_side else
                                f"frame {inst.views[view][0] + 1} of a two-frame image "
                                f"(view from {inst.view_from})")
                row.views[view] = path
    return True


def _labels(row: StudyRow, chosen: dict[View, Instance], age_range: tuple[float, float]) -> None:
    ds = chosen["anterior"].ds
    row.age, source = study_age(ds)
    row.sex = study_sex(ds) or ""
    notes = []
    if row.age is None:
        notes.append(("no_age", "no usable Patient's Age or birth and study dates; age left "
                                   "empty (can be predicted, not trained on)"))
    elif not trainable_age(row.age, age_range):
        # The DataModule's rule: it leaves such a study out and reports it.
        notes.append(("age_out_of_range", f"age {row.age:g} (from {source}) is outside "
                                             f"{age_range[0]:g}-{age_range[1]:g}; kept"))
    if not row.sex:
        code = shown_code(_text(chosen["anterior"], "PatientSex").upper(), SEX_SHOWN)
        notes.append(("unknown_sex", f"Patient's Sex is {code}, not F or M; sex left empty"))
    row.status = notes[0][0] if notes else "ok"
    row.reason = "; ".join(w for _, w in notes) or f"age {row.age:g} from {source}"


def _text(inst: Instance, keyword: str) -> str:
    return "\\".join(str(v) for v in values(inst.ds, keyword)).strip()


def _study(row: StudyRow, pseudo: Pseudonymizer, split_dir: Path, check: bool,
           age_range: tuple[float, float]) -> StudyRow:
    _anatomy_views(row)
    chosen = _assemble(row)
    if chosen is None:
        return row
    ids = {_text(i, "PatientID") for i in row.files}
    if len(ids) > 1:
        return _fail_study(row, "inconsistent_study", "its views carry different Patient IDs")
    row.patient_id = ids.pop()
    if not row.patient_id:
        return _fail_study(row, "no_patient_id", "no Patient ID to derive a pseudonym from")
    row.subject_id = pseudo.subject(row.patient_id)
    row.date = _text(chosen["anterior"], "StudyDate")
    if not _pixels(row, chosen, split_dir, check):
        return row
    for view, inst in chosen.items():
        row.views.setdefault(view, inst.path)
    _labels(row, chosen, age_range)
    row.site = pseudo.site(study_site(chosen["anterior"].ds))
    return row


def _safe_study(row: StudyRow, *args) -> StudyRow:
    """A study whose processing fails in an unforeseen way fails alone, as ``unreadable``."""
    try:
        return _study(row, *args)
    except Exception as err:  # only the type: an arbitrary message may quote a header value
        row.subject_id, row.views = "", {}
        return _fail_study(row, "unreadable", f"its headers or pixels cannot be used "
                                              f"({type(err).__name__})")


def _one_study_per_subject(studies: list[StudyRow]) -> None:
    """Several studies of one patient would share a subject_id: keep the earliest."""
    kept: dict[str, StudyRow] = {}
    for row in sorted((s for s in studies if s.status in WRITTEN), key=lambda s: (s.date, s.key)):
        if row.subject_id in kept:
            _fail_study(row, "repeat_study", f"same subject as study {kept[row.subject_id].key}, "
                                             "which is written (one study per subject)")
        else:
            kept[row.subject_id] = row


def index_folder(
    root: str | Path,
    manifest: str | Path,
    pseudo: Pseudonymizer,
    split_side_by_side: bool = False,
    check_pixels: bool = True,
    age_range: tuple[float, float] = (40, 80),
    skip: Sequence[Path] = (),
    stated_views: dict[str, View] | None = None,
    links_dir: Path | None = None,
    follow_outside: bool = False,
    secrets: Sequence[Path] = (),
    stated_frames: dict[str, tuple[View, View]] | None = None,
    progress: bool = False,
) -> IndexResult:
    """Classify every path under ``root`` and assemble the studies (nothing written yet, except
    the split halves of side-by-side images, next to the manifest). Paths in ``skip`` (and the
    manifest, links and split folders) are reported as ``own_output``, not indexed: a re-run
    into the export sees only the export. ``stated_views`` maps folders below ``root`` (""
    for all of it) to the view of their single frames whose headers name none (--view),
    ``stated_frames`` to the views of the frames of their two-frame files (--frames).
    ``progress`` shows the studies being assembled (deciding views from the anatomy and
    checking pixels take seconds per study)."""
    start = time.perf_counter()
    root = Path(root).resolve()
    base = Path(manifest).resolve().parent
    split_dir = base / SPLIT_DIR
    outputs = [Path(manifest).resolve(), split_dir,
               Path(links_dir).resolve() if links_dir else base / LINKS_DIR,
               *(Path(p).resolve() for p in skip)]
    with warnings.catch_warnings():
        # pydicom warns about damaged files with their values; each file's status says it all.
        warnings.simplefilter("ignore")
        instances = [inst if inst.status else
                     classify(inst, split_side_by_side, stated_view(inst.rel, stated_views),
                              stated_view(inst.rel, stated_frames))
                     for inst in _walk(root, outputs, follow_outside, secrets)]
        instances.sort(key=lambda i: i.rel)
        _mark_duplicates(instances)
        groups: dict[str, list[Instance]] = defaultdict(list)
        for inst in instances:
            if not inst.status:
                groups[inst.study_uid].append(inst)
        studies = [_safe_study(StudyRow(pseudo.study(uid), files), pseudo, split_dir,
                               check_pixels, age_range)
                   for uid, files in progress_display(
                       groups.items(), total=len(groups), desc="index: assembling studies "
                       "(views, pixels)", unit="studies",
                       enabled=progress and len(groups) >= PROGRESS_FROM)]
        checker = _identifiers(instances)
    _one_study_per_subject(studies)
    for row in studies:
        for inst in row.files:
            if not inst.status:
                views = "+".join(v for v in VIEWS if v in inst.views)
                inst.fail(row.status, f"{inst.rel}: {views} of study {row.key}: {row.reason}")
    patient_paths = {i.rel for i in instances if checker.names_patient(i.rel)}
    return IndexResult(instances, studies, time.perf_counter() - start, patient_paths, checker,
                       _left_out(instances, studies, pseudo))


def _left_out(instances: list[Instance], studies: list[StudyRow],
              pseudo: Pseudonymizer) -> list[LeftOut]:
    """Every study not written, by its pseudonyms: a study that failed as a whole, and the
    studies whose files all failed on their own (e.g. view_unknown), so never assembled; a file
    that may hold a study but gave no Study Instance UID (damaged, a broken link) is one entry
    of its own. A file failing beside a written study leaves no study out."""
    found: dict[str, LeftOut] = {}
    for row in studies:
        if row.status not in WRITTEN:
            found[row.key] = LeftOut(row.subject_id, row.key, row.reason, len(row.files))
    written = {row.key for row in studies if row.status in WRITTEN}
    alone: list[LeftOut] = []
    in_study = {id(i) for row in studies for i in row.files}
    for inst in instances:
        if inst.status in WRITTEN or inst.status in NO_STUDY or id(inst) in in_study:
            continue
        uid = inst.study_uid if inst.ds is not None else ""
        if not uid:
            alone.append(LeftOut("", "", inst.reason))
            continue
        key = pseudo.study(uid)
        if key in written:
            continue
        patient = _text(inst, "PatientID")
        entry = found.setdefault(key, LeftOut(pseudo.subject(patient) if patient else "", key,
                                              "", 0))
        entry.subject_id = entry.subject_id or (pseudo.subject(patient) if patient else "")
        entry.reason = "; ".join(r for r in (entry.reason, inst.reason) if r)
        entry.files += 1
    return [*found.values(), *alone]


def exit_code(result: IndexResult) -> int:
    """One rule for every command: 1 when any study was left out (or none written), else 0."""
    return EXIT_PARTIAL if result.left_out or not result.written else EXIT_OK


def _identifiers(instances: list[Instance]) -> PathChecker:
    """The Patient IDs, names and birth dates of every file read, to check paths against."""
    checker = PathChecker()
    for inst in instances:
        headers = [inst.ds]
        if inst.status == "unreadable":
            # A file too damaged to index may still give its patient's identifiers to a
            # second read that stops before the pixel data (e.g. a cut file).
            with contextlib.suppress(Exception):
                headers.append(pydicom.dcmread(inst.path, stop_before_pixels=True))
        for ds in headers:
            try:
                if ds is not None:
                    checker.add(ds)
            except Exception:  # a header too damaged to give identifiers gives none
                continue
    return checker


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


def anatomy_studies(result: IndexResult) -> list[StudyRow]:
    """The written studies with a view decided from the anatomy (no view in their headers)."""
    return [s for s in result.written if any(i.view_from == "anatomy" for i in s.files)]


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


def summary(result: IndexResult, sheet: Path | None = None) -> str:
    """What the index did, in a few lines; ``sheet``: where write_outputs put the contact sheet
    (beside the manifest), named when the anatomy decided a view."""
    counts = Counter(i.status for i in result.instances)
    n = len(result.written)
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    lines = [f"{plural(len(result.instances), 'file')}, {plural(n, 'study')} written in "
             f"{result.seconds:.1f} s "
             f"({rate:.1f} studies/s)"]
    lines += [f"  {status:<22}{count:>7}" for status, count in sorted(counts.items())]
    if result.left_out:
        studies = [lo for lo in result.left_out if lo.study]
        files = len(result.left_out) - len(studies)
        parts = [f"{plural(len(studies), 'study')} left out"] if studies else []
        if files:
            parts.append(f"{plural(files, 'file')} that may hold a study left out")
        lines.append(" and ".join(parts) + ": each file's status and reason are in the report "
                                           "(exit 1)")
    anatomy = [i for i in result.instances if i.view_from == "anatomy" and i.status in WRITTEN]
    if anatomy:
        lines.append(f"{len(anatomy)} written files had no view in their headers: decided from "
                     "the anatomy (index_report.csv: view, view_from, view_margin)")
    studies = anatomy_studies(result)
    if studies:
        lines.append(f"{plural(len(studies), 'study')} with a view decided from the anatomy: "
                     "check that no study's views are swapped at a glance in "
                     f"{sheet if sheet is not None else 'MANIFEST' + CONTACT_SHEET} (its two "
                     "views side by side, front view with the face, back view with the spine)")
    if result.patient_paths:
        lines.append(f"{len(result.patient_paths)} of {len(result.instances)} paths below the "
                     "export name a patient (column names_patient): the report is for the data "
                     "owner only (the manifest uses pseudonymous links)")
    else:
        lines.append("no path below the export names a patient (checked against the "
                     "identifying fields of its files)")
    return "\n".join(lines)
