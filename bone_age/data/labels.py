"""Labels from DICOM headers: age in years (Patient's Age, else birth and study dates), sex."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pydicom.valuerep import DA

# Patient's Age (AS): three digits and a unit. Non-year units become fractional years.
_AGE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$")
_DAYS_PER_YEAR = 365.25
_UNIT_YEARS = {"D": 1 / _DAYS_PER_YEAR, "W": 7 / _DAYS_PER_YEAR, "M": 1 / 12, "Y": 1.0}
# The date the age is measured at, in order of preference.
_DATE_KEYWORDS = ("StudyDate", "AcquisitionDate", "SeriesDate", "ContentDate")
SEX_CODES = {"F": "F", "M": "M"}


def parse_age(text: str) -> float | None:
    """``063Y`` -> 63.0, ``760M`` -> 63.33, ``052W`` -> 1.0, ``120D`` -> 0.33; None if unusable."""
    match = _AGE.match(str(text or "").upper())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2)
    if unit == "Y":
        return float(number)
    return round(number * _UNIT_YEARS[unit], 2)


def _date(value: object) -> dt.date | None:
    try:
        return DA(str(value).strip()) if str(value or "").strip() else None
    except ValueError:
        return None


def completed_years(birth: dt.date, on: dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def study_age(ds: Dataset) -> tuple[float | None, str]:
    """Age in years at the scan and where it came from ('' when there is no usable age).

    From birth and study dates the age is in completed years, as a scanner writes it into
    Patient's Age.
    """
    age = parse_age(ds.get("PatientAge", ""))
    if age is not None:
        return age, "Patient's Age"
    birth = _date(ds.get("PatientBirthDate", ""))
    scan = next((d for kw in _DATE_KEYWORDS if (d := _date(ds.get(kw, "")))), None)
    if birth is None or scan is None or scan < birth:
        return None, ""
    return float(completed_years(birth, scan)), "birth and study dates"


def study_sex(ds: Dataset) -> str | None:
    """F or M from Patient's Sex; None for O, empty or anything else."""
    return SEX_CODES.get(str(ds.get("PatientSex", "") or "").strip().upper())


def trainable_age(age: float, age_range: Sequence[float]) -> bool:
    """Whether a model of class range ``age_range`` learns (and is tested on) this age: inside
    one of its one-year classes, class ``a`` covering [a - 0.5, a + 0.5) (``age_to_class``)."""
    low, high = age_range
    return low - 0.5 <= age < high + 0.5


def study_site(ds: Dataset) -> str:
    """What names the site of a study, for its pseudonym (never to be written as it is):
    Institution Name, else Station Name, else Manufacturer + Manufacturer's Model Name; "" when
    the headers give none. The source is part of the text, so a station never shares a
    pseudonym with an institution of the same name; case and spacing are ignored, as exports
    of one site spell them differently."""
    def text(keyword: str) -> str:
        value = ds.get(keyword, "")
        value = "\\".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        return " ".join(value.split()).casefold()

    for source, keywords in (("institution", ("InstitutionName",)),
                             ("station", ("StationName",)),
                             ("device", ("Manufacturer", "ManufacturerModelName"))):
        found = " / ".join(v for v in map(text, keywords) if v)
        if found:
            return f"{source}:{found}"
    return ""
