"""Which file paths of an export name a patient: the identifiers read from its own headers.

PACS exports often name folders or files after the patient (Patient ID, "SMITH_JOHN",
"1960-03-15"). The indexer reads every file's Patient ID, Other Patient IDs, name and birth
date, and checks each path component below the export folder against all of them. Matching is
generous (case-insensitive, ignoring punctuation and spaces): an identifier of 5 or more
characters anywhere in a component, a shorter one (a name like "Li" or "Ann") as a word of it
("SMITH_ANN", "AnnLee", "IM_1234"), so that it does not fire on every "scanner". A false alarm
only adds a warning to the owner's report (the manifest never names export paths anyway).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset

from bone_age.data.dicom import values

MIN_LENGTH = 5  # shorter identifiers must fill a whole word of the path component
_NAME_SPLIT = re.compile(r"[\^=,\s]+")
# Words of a path component: runs between punctuation, and within them camel-case words,
# letter runs and digit runs.
_WORDS = (re.compile(r"[^\W_]+"), re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+"),
          re.compile(r"[^\W\d_]+"))
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


def _texts(ds: Dataset, keyword: str) -> list[str]:
    """The values of an element as text; the raw bytes where pydicom cannot convert them (a
    damaged VR must not hide an identifier)."""
    try:
        return [str(v) for v in values(ds, keyword)]
    except Exception:
        try:
            raw = ds.get_item(keyword, keep_deferred=True)
        except Exception:
            return []
        data = getattr(raw, "value", None)
        if not isinstance(data, (bytes, bytearray)):
            return []
        return bytes(data).decode("latin-1").strip(" \0").split("\\")


def identifiers(ds: Dataset) -> set[str]:
    """The squashed identifying strings of one header: IDs, each name component, birth date."""
    found: set[str] = set()
    for keyword in ("PatientID", "OtherPatientIDs"):
        found.update(_squash(v) for v in _texts(ds, keyword))
    for name in _texts(ds, "PatientName"):
        # Every component of every group (alphabetic, ideographic, phonetic).
        found.update(_squash(part) for part in _NAME_SPLIT.split(name))
    for date in _texts(ds, "PatientBirthDate"):
        found.update(_date_forms(date))
    return {f for f in found if len(f) > 1}  # an initial alone names no one


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
        if not self._short:
            return False
        words: Iterable[str] = (w.casefold() for pattern in _WORDS for w in pattern.findall(part))
        return any(w in self._short for w in words)
