"""The manifest: the project's one input format for every cohort, real or synthetic.

A CSV with one row per study and at least the columns ``subject_id, age, sex, anterior,
posterior``. ``age`` is in years (empty when unknown: such a study can be predicted, not trained
on), ``sex`` is F or M, and the two view columns are paths relative to the manifest's folder (the
same file twice for a multi-frame file holding both views). Extra columns are kept and ignored.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

REQUIRED_COLUMNS = ("subject_id", "age", "sex", "anterior", "posterior")
_SEX_CODES = {"F": "F", "FEMALE": "F", "M": "M", "MALE": "M"}


class ManifestError(ValueError):
    """The manifest as a whole cannot be used (missing file or column)."""


@dataclass(frozen=True)
class Study:
    subject_id: str
    age: float | None
    sex: str
    anterior: Path
    posterior: Path
    row: int  # line number in the CSV, for messages

    @property
    def is_male(self) -> int:
        return int(self.sex == "M")


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


def _parse_row(
    row: dict[str, str], line: int, base: Path, source: str
) -> tuple[Study | None, Problem | None]:
    sid = (row.get("subject_id") or "").strip()

    def problem(status: str, reason: str) -> tuple[None, Problem]:
        return None, Problem(source, line, sid, status, reason)

    if not sid:
        return problem("bad_row", "empty subject_id")
    age_text = (row.get("age") or "").strip()
    try:
        age = float(age_text) if age_text else None
    except ValueError:
        return problem("bad_age", f"age {age_text!r} is not a number of years")
    if age is not None and not 0 <= age < 150:
        return problem("bad_age", f"age {age:g} is not a plausible age in years")
    sex = _SEX_CODES.get((row.get("sex") or "").strip().upper())
    if sex is None:
        return problem("bad_sex", f"unknown sex code {row.get('sex')!r} (expected F or M)")
    paths = {}
    for view in ("anterior", "posterior"):
        text = (row.get(view) or "").strip()
        if not text:
            return problem("missing_view", f"no {view} file given")
        # Absolute but not resolved: a link keeps its (pseudonymous) name in every message,
        # where resolving it would print the export's own path, which may name the patient.
        path = Path(os.path.abspath(base / text))
        if not path.is_file():
            return problem("missing_file", f"{view} file {text} does not exist")
        paths[view] = path
    return Study(sid, age, sex, paths["anterior"], paths["posterior"], line), None


def read_manifest(path: str | Path) -> tuple[list[Study], list[Problem]]:
    """Parse and check a manifest; returns the usable studies and the problems found."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest file does not exist")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"{path}: missing column(s) {', '.join(missing)}")
        studies, problems, seen = [], [], set()
        for line, row in enumerate(reader, start=2):
            study, problem = _parse_row(row, line, path.parent, str(path))
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
        raise ManifestError(f"{path}: no rows")
    return studies, problems
