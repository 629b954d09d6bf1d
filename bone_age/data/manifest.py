"""The manifest: the project's one input format for every cohort, real or synthetic.

A CSV with one row per study and at least the columns ``subject_id, age, sex, anterior,
posterior``. ``age`` is in years (empty when unknown: such a study can be predicted, not trained
on), ``sex`` is F or M (empty when unknown: enough for a model that does not take sex as an
input), and the two view columns are paths relative to the manifest's folder (the same file twice
for a multi-frame file holding both views). The optional ``site`` column names the site
(hospital, camera) of each study by a pseudonym (``python -m bone_age.index`` writes one):
``data.split=site`` holds one site out per fold. Like ``subject_id`` it is copied into outputs as
it is, so it must never be a hospital's real name, nor start with ``=``, ``+``, ``-`` or ``@``
(a spreadsheet would run it as a formula: such a manifest is refused). Extra columns are kept
and ignored. The file is UTF-8 text (a byte order mark is allowed); anything else is refused
with what to do.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import not_regular
from bone_age.utils.tables import formula_problem

REQUIRED_COLUMNS = ("subject_id", "age", "sex", "anterior", "posterior")
SITE_COLUMN = "site"  # optional: the study's site pseudonym
_SEX_CODES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


class ManifestError(BoneAgeError, ValueError):
    """The manifest as a whole cannot be used (missing, not UTF-8 text, bad header...)."""


@dataclass(frozen=True)
class Study:
    subject_id: str
    age: float | None
    sex: str  # F or M; "" (unknown) only where read with sex_required=False
    anterior: Path
    posterior: Path
    row: int  # line number in the CSV, for messages
    site: str = ""  # the site pseudonym; "" where the manifest gives none

    @property
    def is_male(self) -> int:
        return int(self.sex == "M")


@dataclass(frozen=True)
class Member:
    """A subject of the cohort: its labels, None where the manifest gives none usable."""

    subject_id: str
    age: float | None
    sex: str | None
    row: int
    site: str = ""


@dataclass(frozen=True)
class Problem:
    """A study left out, and why: written to the run directory, never dropped silently."""

    source: str
    row: int
    subject_id: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}, row {self.row} ({self.subject_id or 'no id'}): {self.reason}"


def _parse_age(row: dict[str, str]) -> float | None:
    """The row's age in years, None when empty; ValueError with the reason when unusable."""
    text = (row.get("age") or "").strip()
    if not text:
        return None
    try:
        age = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of years") from None
    if not 0 <= age < 150:  # NaN fails this too
        raise ValueError(f"{age:g} is not a plausible age in years")
    return age


def _parse_site(row: dict[str, str]) -> str:
    return (row.get(SITE_COLUMN) or "").strip()


def _parse_sex(row: dict[str, str]) -> str | None:
    return _SEX_CODES.get((row.get("sex") or "").strip().upper())


def _parse_row(
    row: dict[str, str], line: int, base: Path, source: str, sex_required: bool
) -> tuple[Study | None, Problem | None]:
    sid = (row.get("subject_id") or "").strip()

    def problem(status: str, reason: str) -> tuple[None, Problem]:
        return None, Problem(source, line, sid, status, reason)

    if not sid:
        return problem("bad_row", "column subject_id: empty")
    try:
        age = _parse_age(row)
    except ValueError as err:
        return problem("bad_age", f"column age: {err}")
    sex_text = (row.get("sex") or "").strip()
    sex = _SEX_CODES.get(sex_text.upper(), "" if not sex_text else None)
    if sex is None or (sex_required and not sex):
        unknown = "" if sex_required else ", or empty when unknown"
        what = f"unknown code {sex_text!r}" if sex_text else "empty"
        return problem("bad_sex", f"column sex: {what} (expected F or M{unknown})")
    paths = {}
    for view in ("anterior", "posterior"):
        text = (row.get(view) or "").strip()
        if not text:
            return problem("missing_view", f"column {view}: no file given")
        # Absolute but not resolved: a link keeps its (pseudonymous) name in every message,
        # where resolving it would print the export's own path, which may name the patient.
        try:
            path = Path(os.path.abspath(base / text))
            why = not_regular(path)  # a FIFO or /dev/zero exists: said as what it is
            folder = why is not None and path.is_dir()
        except (OSError, RuntimeError, ValueError) as err:  # too long, a NUL byte...
            return problem("missing_file", f"column {view}: cannot use path {text!r} "
                                           f"({type(err).__name__})")
        if why is not None:
            what = "is a folder, not a file" if folder else why
            return problem("missing_file", f"column {view}: file {text} {what}")
        paths[view] = path
    return Study(sid, age, sex, paths["anterior"], paths["posterior"], line,
                 _parse_site(row)), None


def _text(path: Path) -> str:
    """The manifest's text; anything but UTF-8 (a BOM allowed) is refused with what to do."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror})") from None
    save_as = "save the manifest as UTF-8 CSV (in a spreadsheet: 'CSV UTF-8')"
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ManifestError(f"{path}: the manifest is UTF-32 text; {save_as}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ManifestError(f"{path}: the manifest is UTF-16 text; {save_as}")
    if b"\0" in data:  # UTF-16 without a BOM, or not text at all
        line = data.count(b"\n", 0, data.index(b"\0")) + 1
        raise ManifestError(f"{path}: line {line}: a NUL byte, so not CSV text (a binary file, "
                            f"or UTF-16 without a byte order mark); {save_as}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise ManifestError(
            f"{path}: line {line}, byte {column}: byte 0x{data[err.start]:02x} is not UTF-8 "
            f"(the file is probably Latin-1 or Windows-1252); {save_as}") from None


def _header(path: Path, fields: list[str] | None) -> list[str]:
    """The column names, checked: present, no duplicates, the required ones all there."""
    if not fields or not any(f.strip() for f in fields):
        raise ManifestError(f"{path}: empty manifest (no header row); the first line must name "
                            f"the columns {', '.join(REQUIRED_COLUMNS)}")
    names = [f.strip() for f in fields]
    for name in dict.fromkeys(names):
        where = [i + 1 for i, n in enumerate(names) if n == name]
        if name and len(where) > 1:
            raise ManifestError(f"{path}: line 1: column {name!r} appears {len(where)} times "
                                f"(columns {', '.join(map(str, where))})")
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        found = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
        raise ManifestError(f"{path}: line 1: missing column(s) {', '.join(missing)} "
                            f"(found {found})")
    return names


def read_manifest(
    path: str | Path, sex_required: bool = True
) -> tuple[list[Study], list[Problem]]:
    """Parse and check a manifest; returns the usable studies and the problems found.

    Args:
        path: the manifest CSV (UTF-8).
        sex_required: rows without a sex are problems (training); with False an empty sex is
            kept as unknown (``Study.sex == ""``), for models that do not take sex as an input.

    Raises:
        ManifestError: the file as a whole cannot be used (missing, not UTF-8 text, no or a
            bad header, not parseable as CSV); the message names file, line and what to do.
    """
    path = Path(path)
    studies, problems, seen = [], [], set()
    for line, row in _rows(path):
        if isinstance(row, Problem):
            problems.append(row)
            continue
        study, problem = _parse_row(row, line, path.parent, str(path), sex_required)
        if study is not None and study.subject_id in seen:
            study, problem = None, Problem(
                str(path), line, study.subject_id, "duplicate", "subject_id appears twice"
            )
        if problem:
            problems.append(problem)
        else:
            seen.add(study.subject_id)
            studies.append(study)
    if not studies and not problems:
        raise ManifestError(f"{path}: no rows below the header")
    return studies, problems


def read_cohort(path: str | Path) -> list[Member]:
    """Every subject the manifest names, with its labels as far as they can be read.

    This is the cohort that cross-validation folds are drawn over: it depends on the manifest's
    subject, age and sex columns only, never on whether a study's files exist or decode, so a
    study that one model cannot use leaves its own fold and moves no one else. A subject named
    twice appears once (its first row, as in ``read_manifest``).
    """
    members, seen = [], set()
    for line, row in _rows(Path(path)):
        if isinstance(row, Problem):
            continue  # a row that cannot be split into its columns names no one reliably
        sid = (row.get("subject_id") or "").strip()
        if not sid or sid in seen:
            continue
        seen.add(sid)
        try:
            age = _parse_age(row)
        except ValueError:
            age = None
        members.append(Member(sid, age, _parse_sex(row), line, _parse_site(row)))
    return members


def manifest_columns(path: str | Path) -> list[str]:
    """The manifest's column names (its header, checked as ``read_manifest`` does)."""
    return _open(Path(path))[0]


def _open(path: Path) -> tuple[list[str], Any]:
    """The checked column names and a CSV reader positioned after the header."""
    why = not_regular(path)  # a FIFO would block the read
    if why is not None:
        what = "a folder, not a manifest file" if path.is_dir() else f"manifest file {why}"
        raise ManifestError(f"{path}: {what}")
    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        return _header(path, next(reader, None)), reader
    except csv.Error as err:
        raise ManifestError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None


def _check_pseudonyms(path: Path, line: int, row: dict[str, str]) -> None:
    """ManifestError for a subject_id or site that a spreadsheet would run as a formula: they
    are copied into every output (predictions.csv, age_gap.csv, metrics.json, table1.csv)."""
    for column in ("subject_id", SITE_COLUMN):
        problem = formula_problem((row.get(column) or "").strip())
        if problem:
            raise ManifestError(f"{path}: line {line}, column {column}: the value {problem}")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str] | Problem]]:
    """(line number, row) of each data row, after checking the file and its columns; a row
    whose fields do not fit the header comes as its Problem."""
    names, reader = _open(path)
    try:
        end = reader.line_num
        for fields in reader:
            line, end = end + 1, reader.line_num  # a quoted field may span lines
            if not fields:
                continue
            extra = [f for f in fields[len(names):] if f.strip()]
            if extra or len(fields) < len(names) and any(
                    names.index(c) >= len(fields) for c in REQUIRED_COLUMNS):
                sid = fields[names.index("subject_id")] if len(fields) > names.index(
                    "subject_id") else ""
                yield line, Problem(str(path), line, sid.strip(), "bad_row",
                                    f"{len(fields)} fields but the header has {len(names)} "
                                    "columns (an unquoted comma, or a cut row?)")
                continue
            row = dict(zip(names, fields, strict=False))
            _check_pseudonyms(path, line, row)
            yield line, row
    except csv.Error as err:
        raise ManifestError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
