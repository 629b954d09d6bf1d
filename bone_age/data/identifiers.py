"""Which file paths of an export name a patient: the identifiers read from its own headers.

PACS exports often name folders or files after the patient (Patient ID, "SMITH_JOHN",
"1960-03-15"). The indexer reads every file's Patient ID, Other Patient IDs, name and birth
date, and checks each path component below the export folder against all of them. Matching is
generous (case-insensitive, ignoring punctuation and spaces, anywhere in a component): a false
alarm only adds a warning to the owner's report, while a miss would leak an identity.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

from bone_age.data.dicom import values

MIN_LENGTH = 3  # shorter identifiers (a two-letter name) must fill a whole word of the path
_NAME_SPLIT = re.compile(r"[\^=,\s]+")
_WORD_SPLIT = re.compile(r"[\W_]+")
_DATE = re.compile(r"(\d{4})\D?(\d{2})\D?(\d{2})")


def _squash(text: str) -> str:
    """Lower case, letters and digits only: "QX-77 88" and "qx7788" compare equal."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _date_forms(text: str) -> set[str]:
    """A DA value (YYYYMMDD, or YYYY-MM-DD as some senders write it) in the orders that file
    names use: YYYYMMDD, DDMMYYYY and MMDDYYYY (separators are squashed away anyway)."""
    match = _DATE.search(text)
    if not match:
        return set()
    year, month, day = match.groups()
    return {year + month + day, day + month + year, month + day + year}


def identifiers(ds: Dataset) -> set[str]:
    """The squashed identifying strings of one header: IDs, each name component, birth date."""
    found: set[str] = set()
    for keyword in ("PatientID", "OtherPatientIDs"):
        found.update(_squash(str(v)) for v in values(ds, keyword))
    for name in values(ds, "PatientName"):
        # Every component of every group (alphabetic, ideographic, phonetic).
        found.update(_squash(part) for part in _NAME_SPLIT.split(str(name)))
    for date in values(ds, "PatientBirthDate"):
        found.update(_date_forms(str(date)))
    return {f for f in found if f}


class PathChecker:
    """Collects identifiers from headers, then tells which relative paths contain one."""

    def __init__(self) -> None:
        self._long: set[str] = set()
        self._short: set[str] = set()
        self._lengths: set[int] = set()

    def add(self, ds: Dataset) -> None:
        for ident in identifiers(ds):
            if len(ident) >= MIN_LENGTH:
                self._long.add(ident)
                self._lengths.add(len(ident))
            else:
                self._short.add(ident)

    def names_patient(self, rel: str) -> bool:
        """True when a component of ``rel`` (a path below the export folder) holds an
        identifier of any file of the export."""
        return any(self._component(part) for part in rel.split("/") if part)

    def _component(self, part: str) -> bool:
        # Every substring of each identifier length looked up in a set: linear in the export's
        # size, where testing each identifier against each path would be quadratic.
        squashed = _squash(part)
        if any(squashed[i:i + n] in self._long for n in self._lengths
               for i in range(len(squashed) - n + 1)):
            return True
        words: Iterable[str] = (_squash(w) for w in _WORD_SPLIT.split(part))
        return bool(self._short) and any(w in self._short for w in words)
