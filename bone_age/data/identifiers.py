"""Which file paths of an export name a patient: the identifiers read from its own headers.

PACS exports often name folders or files after the patient ("SMITH_JOHN", "1960-03-15", the
accession number, "Mueller"). The indexer reads every file's identifying fields (IDENTIFYING_IDS,
IDENTIFYING_NAMES, the birth date, the institution) and checks each path component below the
export folder, and every symbolic link target it would write, against all of them.

Matching is generous (case-insensitive, ignoring punctuation and spaces, accents folded to
ASCII by Unicode NFKD, German umlauts also as ue/oe/ae/ss, IDs also without leading zeros,
birth dates in the orders and paddings file names use): an identifier of 5 or more characters
anywhere in a component, a shorter one as a whole word of it ("SMITH_ANN", "AnnLee",
"IM_1234"). Short values that name no one are not identifiers: IDs under 3 characters, a
short name part that holds a digit or is a common DICOM word ("NM1", "WB", "ANT": the
NEMA sample's name "CompressedSamples^NM1" made every file "NM1_*" look named after it). A
false alarm only makes the owner's report warn and a link a copy (the manifest never names
export paths anyway).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from pydicom.dataset import Dataset

from bone_age.data.dicom import items, values

MIN_LENGTH = 5  # shorter identifiers must fill a whole word of the path component
MIN_ID_LENGTH = 3  # a 1-2 character ID (or a shorter one once its zeros are stripped) is no one
IDENTIFYING_IDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID")
IDENTIFYING_NAMES = ("PatientName", "OtherPatientNames", "PatientBirthName",
                     "PatientMotherBirthName")
# Short words of scan file names that a name part may happen to equal (modalities, views,
# series): never taken as a name.
COMMON_WORDS = frozenset({"nm", "ct", "mr", "pt", "ot", "sc", "dx", "cr", "us", "wb", "ant",
                          "post", "ap", "pa", "img", "im", "ser", "st", "dcm", "bone", "scan",
                          "body", "spot", "mip", "view"})
_NAME_SPLIT = re.compile(r"[\^=,\s]+")
# Words of a path component: runs between punctuation, and within them camel-case words,
# letter runs and digit runs.
_WORDS = (re.compile(r"[^\W_]+"), re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+"),
          re.compile(r"[^\W\d_]+"))
_DATE = re.compile(r"(\d{4})\D?(\d{2})\D?(\d{2})")
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "Ä": "Ae", "Ö": "Oe",
                         "Ü": "Ue"})


def _ascii(text: str) -> str:
    """Accents folded away (NFKD, then ASCII only): "Müller" -> "Muller"."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _spellings(text: str) -> set[str]:
    """The text as written, accent-folded and with German umlauts spelt out."""
    return {text, _ascii(text), _ascii(text.translate(_GERMAN))}


def _squash(text: str) -> str:
    """Lower case, letters and digits only: "QX-77 88" and "qx7788" compare equal."""
    return "".join(c for c in text.casefold() if c.isalnum())


def _date_forms(text: str) -> set[str]:
    """A DA value (YYYYMMDD, or YYYY-MM-DD as some senders write it) as file names write it:
    year first or last, day or month first, with or without leading zeros (separators are
    squashed away anyway: 1960-03-05, 05.03.1960, 5-3-1960, 3/5/1960)."""
    match = _DATE.search(text)
    if not match:
        return set()
    year, month, day = match.groups()
    forms = set()
    for m in {month, month.lstrip("0") or "0"}:
        for d in {day, day.lstrip("0") or "0"}:
            forms |= {year + m + d, d + m + year, m + d + year}
    return forms


def _id_forms(text: str) -> set[str]:
    squashed = _squash(text)
    return {f for f in (squashed, squashed.lstrip("0")) if len(f) >= MIN_ID_LENGTH}


def _name_forms(part: str) -> set[str]:
    forms = set()
    for spelling in _spellings(part):
        word = _squash(spelling)
        if len(word) >= MIN_LENGTH or (len(word) > 1 and word.isalpha()
                                       and word not in COMMON_WORDS):
            forms.add(word)
    return forms


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


def _all_texts(ds: Dataset, keyword: str) -> list[str]:
    """The values of an element, and of it inside Other Patient IDs Sequence items."""
    found = _texts(ds, keyword)
    for item in items(ds, "OtherPatientIDsSequence"):
        found += _texts(item, keyword)
    return found


def identifiers(ds: Dataset) -> set[str]:
    """The squashed identifying strings of one header: IDs, name parts, birth date, institution
    (each in the spellings a file name may use)."""
    found: set[str] = set()
    for keyword in IDENTIFYING_IDS:
        for value in _all_texts(ds, keyword):
            found |= _id_forms(value)
    for keyword in IDENTIFYING_NAMES:
        for name in _all_texts(ds, keyword):
            # Every component of every group (alphabetic, ideographic, phonetic), in any order.
            for part in _NAME_SPLIT.split(name):
                found |= _name_forms(part)
    for date in _texts(ds, "PatientBirthDate"):
        found |= _date_forms(date)
    for institution in _texts(ds, "InstitutionName"):
        # The whole name only: one of its words ("Memorial") names no one.
        found |= {w for t in _spellings(institution) if len(w := _squash(t)) >= MIN_LENGTH}
    return found


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
        spellings = _spellings(part)
        for squashed in map(_squash, spellings):
            if any(squashed[i:i + n] in self._long for n in self._lengths
                   for i in range(len(squashed) - n + 1)):
                return True
        if not self._short:
            return False
        words: Iterable[str] = (w.casefold() for text in spellings for pattern in _WORDS
                                for w in pattern.findall(text))
        return any(w in self._short or w.lstrip("0") in self._short for w in words)
