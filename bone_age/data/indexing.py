"""Index a DICOM export (e.g. from a PACS) into a pseudonymous manifest and a per-file report.

Grouping reads headers only; pixels are decoded only to check the chosen views (optional) or to
split a side-by-side image. Every input file gets exactly one report row with a status:

- ``ok``, or a warning for a study that is still written: ``no_age`` (age empty),
  ``age_out_of_range`` (kept with its age; training leaves it out and says so), ``unknown_sex``
  (sex empty; training reports it).
- a file that gives no view: ``dicomdir``, ``not_dicom``, ``unreadable``, ``duplicate``,
  ``unsupported_modality``, ``unsupported_image``, ``no_pixels``, ``view_unknown``.
- a study that is not written: ``incomplete_study``, ``ambiguous_view``, ``inconsistent_study``,
  ``no_patient_id``, ``empty_image``, ``repeat_study`` (one study per subject: the earliest).

Reasons name the file (relative to the DICOM folder) and the pseudonymous study key, never a
patient attribute.
"""

from __future__ import annotations

import csv
import os
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bone_age.data.dicom import VIEWS, DicomReadError, View, pixel_counts, read_dataset, read_view
from bone_age.data.instances import Instance, classify
from bone_age.data.labels import study_age, study_sex
from bone_age.data.pseudonym import Pseudonymizer
from bone_age.data.sidebyside import split_halves, write_view_file

MANIFEST_COLUMNS = ["subject_id", "age", "sex", "anterior", "posterior", "study"]
REPORT_COLUMNS = ["file", "status", "study", "subject_id", "reason"]
WRITTEN = ("ok", "no_age", "age_out_of_range", "unknown_sex")
SPLIT_DIR = "split"
_SUFFIX = {"anterior": "ANT", "posterior": "POST"}


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
    status: str = ""
    reason: str = ""


@dataclass
class IndexResult:
    instances: list[Instance]
    studies: list[StudyRow]
    seconds: float

    @property
    def written(self) -> list[StudyRow]:
        return sorted((s for s in self.studies if s.status in WRITTEN),
                      key=lambda s: s.subject_id)


def _walk(root: Path, skip: Sequence[Path]) -> list[Path]:
    """Every file under root, except our own outputs (when written inside the export)."""
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(p == s or p.is_relative_to(s) for s in skip))


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


def _fail_study(row: StudyRow, status: str, why: str) -> StudyRow:
    row.status, row.reason = status, why
    for inst in row.files:
        inst.fail(status, f"{inst.rel}: study {row.key} not written: {why}")
    return row


def _assemble(row: StudyRow) -> dict[View, Instance] | None:
    """The one instance giving each view, or None after failing the study."""
    candidates = {v: [i for i in row.files if v in i.views] for v in VIEWS}
    for view, found in candidates.items():
        if len(found) > 1:
            _fail_study(row, "ambiguous_view", f"{len(found)} candidate {view} views "
                                               f"({', '.join(i.rel for i in found)})")
            return None
    missing = [v for v in VIEWS if not candidates[v]]
    if missing:
        _fail_study(row, "incomplete_study", f"no {' or '.join(missing)} view found")
        return None
    # Only the instances that give a view belong to the written study.
    chosen = {v: candidates[v][0] for v in VIEWS}
    row.files = list(dict.fromkeys(chosen.values()))
    return chosen


def _pixels(row: StudyRow, chosen: dict[View, Instance], split_dir: Path, check: bool) -> bool:
    """Decode the chosen views (always for a side-by-side image, which is split into files)."""
    for inst in row.files:
        if not (check or inst.side_by_side):
            continue
        try:
            ds = read_dataset(inst.path)
            if inst.side_by_side:
                views = split_halves(pixel_counts(ds, inst.rel)[0])
            else:
                views = {v: read_view(inst.rel, v, ds) for v, i in chosen.items() if i is inst}
        except DicomReadError as err:
            _fail_study(row, "unreadable", f"{inst.rel}: {err.reason}")
            return False
        for view, counts in views.items():
            if not np.isfinite(counts).all() or counts.max() <= 0:
                _fail_study(row, "empty_image",
                            f"the {view} view has no counts (all zero or not finite)")
                return False
            if inst.side_by_side:
                path = split_dir / f"{row.key}_{_SUFFIX[view]}.dcm"
                write_view_file(counts, path, view, row.key)
                row.views[view] = path
    return True


def _labels(row: StudyRow, chosen: dict[View, Instance], age_range: tuple[float, float]) -> None:
    ds = chosen["anterior"].ds
    row.age, source = study_age(ds)
    row.sex = study_sex(ds) or ""
    warnings = []
    if row.age is None:
        warnings.append(("no_age", "no usable Patient's Age or birth and study dates; age left "
                                   "empty (can be predicted, not trained on)"))
    elif not age_range[0] - 0.5 <= row.age <= age_range[1] + 0.5:
        # Same tolerance as the DataModule, which leaves such a study out and reports it.
        warnings.append(("age_out_of_range", f"age {row.age:g} (from {source}) is outside "
                                             f"{age_range[0]:g}-{age_range[1]:g}; kept"))
    if not row.sex:
        code = str(ds.get("PatientSex", "") or "").strip()[:4]
        warnings.append(("unknown_sex", f"Patient's Sex {code!r} is not F or M; sex left empty"))
    row.status = warnings[0][0] if warnings else "ok"
    row.reason = "; ".join(w for _, w in warnings) or f"age {row.age:g} from {source}"


def _study(row: StudyRow, pseudo: Pseudonymizer, split_dir: Path, check: bool,
           age_range: tuple[float, float]) -> StudyRow:
    chosen = _assemble(row)
    if chosen is None:
        return row
    ids = {str(i.ds.get("PatientID", "") or "").strip() for i in row.files}
    if len(ids) > 1:
        return _fail_study(row, "inconsistent_study", "its views carry different Patient IDs")
    row.patient_id = ids.pop()
    if not row.patient_id:
        return _fail_study(row, "no_patient_id", "no Patient ID to derive a pseudonym from")
    row.subject_id = pseudo.subject(row.patient_id)
    row.date = str(chosen["anterior"].ds.get("StudyDate", "") or "")
    if not _pixels(row, chosen, split_dir, check):
        return row
    for view, inst in chosen.items():
        row.views.setdefault(view, inst.path)
    _labels(row, chosen, age_range)
    return row


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
) -> IndexResult:
    """Classify every file under ``root`` and assemble the studies (nothing written yet, except
    the split halves of side-by-side images, next to the manifest). Files in ``skip`` (and the
    manifest and split folder) are not indexed: a re-run into the export sees only the export."""
    start = time.perf_counter()
    root = Path(root).resolve()
    split_dir = Path(manifest).resolve().parent / SPLIT_DIR
    outputs = [Path(manifest).resolve(), split_dir, *(Path(p).resolve() for p in skip)]
    instances = [classify(p, root, split_side_by_side) for p in _walk(root, outputs)]
    _mark_duplicates(instances)
    groups: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        if not inst.status:
            groups[inst.study_uid].append(inst)
    studies = [_study(StudyRow(pseudo.study(uid), files), pseudo, split_dir, check_pixels,
                      age_range) for uid, files in groups.items()]
    _one_study_per_subject(studies)
    for row in studies:
        for inst in row.files:
            if not inst.status:
                views = "+".join(v for v in VIEWS if v in inst.views)
                inst.fail(row.status, f"{inst.rel}: {views} of study {row.key}: {row.reason}")
    return IndexResult(instances, studies, time.perf_counter() - start)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def write_manifest(result: IndexResult, path: str | Path) -> None:
    """The manifest: pseudonyms, labels and paths relative to the manifest's folder."""
    path = Path(path)
    base = path.resolve().parent
    _write_csv(path, MANIFEST_COLUMNS, [{
        "subject_id": s.subject_id, "age": "" if s.age is None else f"{s.age:g}", "sex": s.sex,
        **{v: Path(os.path.relpath(s.views[v], base)).as_posix() for v in VIEWS},
        "study": s.key,
    } for s in result.written])


def write_report(result: IndexResult, path: str | Path) -> None:
    """One row per input file, in walk order."""
    study_of = {id(i): s for s in result.studies for i in s.files}
    rows = []
    for inst in result.instances:
        row = study_of.get(id(inst))
        rows.append({"file": inst.rel, "status": inst.status,
                     "study": row.key if row else "",
                     "subject_id": row.subject_id if row and row.status in WRITTEN else "",
                     "reason": inst.reason})
    _write_csv(Path(path), REPORT_COLUMNS, rows)


def write_link_file(result: IndexResult, path: str | Path) -> None:
    """For the data owner only: pseudonym -> Patient ID of every written subject."""
    pairs = {s.subject_id: s.patient_id for s in result.written}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only before any ID is in it
    os.chmod(path, 0o600)
    _write_csv(path, ["subject_id", "patient_id"],
               [{"subject_id": k, "patient_id": v} for k, v in sorted(pairs.items())])


def summary(result: IndexResult) -> str:
    counts = Counter(i.status for i in result.instances)
    n = len(result.written)
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    lines = [f"{len(result.instances)} files, {n} studies written in {result.seconds:.1f} s "
             f"({rate:.1f} studies/s)"]
    lines += [f"  {status:<22}{count:>7}" for status, count in sorted(counts.items())]
    return "\n".join(lines)
