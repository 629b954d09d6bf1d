"""Index a DICOM export (e.g. from a PACS) into a pseudonymous manifest and a per-file report.

Grouping reads headers only; pixels are decoded only to check the chosen views (optional) or to
split a side-by-side image. Every path below the export folder gets exactly one report row with
a status (see STATUSES in index_result.py). Whatever goes wrong with one file becomes that
file's status: an index run never stops at a bad file.

Reasons name the file (relative to the DICOM folder) and the pseudonymous study key, never a
patient attribute. The export's own paths may name patients; the report (for the data owner)
says so in its first line, and the manifest never holds them: it points to pseudonymous links
(or copies) named after the subject, in ``links/`` beside it.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pydicom

from bone_age.data.anatomy import (
    PAIR_MARGIN,
    SINGLE_MARGIN,
    ViewDecision,
    decide_pair,
)
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
from bone_age.data.index_outputs import LINKS_DIR, SPLIT_DIR
from bone_age.data.index_result import NO_STUDY, WRITTEN, IndexResult, LeftOut, StudyRow
from bone_age.data.index_walk import mark_duplicates, stated_view, walk_export
from bone_age.data.instances import Instance, classify, decide_frames, frame_decision
from bone_age.data.labels import study_age, study_sex, study_site, trainable_age
from bone_age.data.pseudonym import Pseudonymizer
from bone_age.data.sidebyside import split_halves, write_view_file
from bone_age.utils.console import progress as progress_display

_SUFFIX = {"anterior": "ANT", "posterior": "POST"}
# Studies from which the index shows progress: deciding views from the anatomy takes about a
# quarter of a second per study (2 shared cores), so 120 studies would be 30 s of silence.
PROGRESS_FROM = 20
SEX_SHOWN = frozenset({"F", "M", "O"})  # Patient's Sex codes a reason may quote


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
                     for inst in walk_export(root, outputs, follow_outside, secrets)]
        instances.sort(key=lambda i: i.rel)
        mark_duplicates(instances)
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
