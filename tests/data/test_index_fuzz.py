"""Property-based fuzzing of python -m bone_age.index with mutated NM files.

Valid small NM files (tests/nm_files.py) carrying a planted identity are mutated: value
multiplicities, VRs, missing and extra elements, value lengths, transfer syntaxes (explicit,
implicit, big endian, deflated, RLE), truncated and corrupted bytes. Whatever comes out, the
index must give one report row per file, end with 0 or 1 (never a traceback), write no planted
identity into the manifest (nor into the report, unless a file name itself carries it), and
every study it writes must be readable by the training/prediction reader.

Profiles: ``ci`` (the default: 40 examples, deterministic, a few seconds) and ``long``
(``HYPOTHESIS_PROFILE=long``: 5000 random examples, for deeper searches).
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import tempfile
import warnings
from pathlib import Path

import pydicom
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from bone_age.data.dicom import DicomReadError, read_study_views
from bone_age.data.index_result import STATUSES, WRITTEN
from bone_age.data.manifest import read_manifest
from bone_age.index import main
from tests.nm_files import nm_dataset

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

PATIENT_ID, NAME, BIRTH = "QZ-4471", "Vandermeer^Ottoline", "19310522"
# What must never reach the manifest: the ID, each name component, the birth date's forms.
SECRETS = ["qz-4471", "qz4471", "vandermeer", "ottoline", "19310522", "1931-05-22",
           "22.05.1931"]
# Folders named after the patient, as PACS exports do (every form of the identity in each).
IDENTIFYING_NAMES = ["QZ-4471_VANDERMEER_1931-05-22", "Ottoline Vandermeer (19310522)",
                     "qz4471-ottoline", "22.05.1931_Vandermeer"]

KEYWORDS = ["DetectorVector", "NumberOfFrames", "Rows", "Columns", "BitsAllocated",
            "BitsStored", "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation",
            "Modality", "SOPInstanceUID", "StudyInstanceUID", "SOPClassUID", "PatientID",
            "PatientName", "PatientBirthDate", "PatientAge", "PatientSex", "StudyDate",
            "SeriesDescription", "ImageID", "RescaleSlope", "RescaleIntercept",
            "DetectorInformationSequence", "ViewCodeSequence", "PixelData", "NumberOfDetectors"]
VRS = ["US", "SS", "UL", "IS", "DS", "CS", "LO", "SH", "PN", "DA", "UI", "OB", "UN", "LT",
       "FD", "AT"]
SCALARS = st.sampled_from([0, 1, 2, 3, -1, 7, 65535, 2**31 - 1, "", "1", "2", "x", "1.5",
                           "ANT", "POSTERIOR", "NM", "CT", "MONOCHROME1", "RGB",
                           "Vandermeer^Ottoline", "QZ-4471", "19310522", b"\x00\x01"])


def _value_for(vr: str, raw: object) -> object:
    """A value that pydicom can encode under ``vr`` (best effort; odd values are the point)."""
    if vr in ("US", "UL"):
        return abs(int(raw)) % 65536 if isinstance(raw, int) else 1
    if vr == "SS":
        return int(raw) % 32768 if isinstance(raw, int) else -1
    if vr == "FD":
        return float(raw) if isinstance(raw, int) else 0.5
    if vr == "AT":
        return 0x00540020
    if vr in ("OB", "UN"):
        return raw if isinstance(raw, bytes) else str(raw).encode()
    return raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)


@st.composite
def mutation(draw):
    kind = draw(st.sampled_from(["multiplicity", "vr", "delete", "extra", "length",
                                 "sequence", "pixels"]))
    keyword = draw(st.sampled_from(KEYWORDS))
    return (kind, keyword, draw(st.lists(SCALARS, min_size=0, max_size=3)),
            draw(st.sampled_from(VRS)), draw(st.integers(0, 4096)))


def apply(ds: Dataset, change: tuple) -> None:
    kind, keyword, vals, vr, number = change
    if kind == "delete":
        if keyword in ds:
            delattr(ds, keyword)
    elif kind == "multiplicity":  # none, one or several values, whatever the VM should be
        elem_vr = ds[keyword].VR if keyword in ds else "LO"
        if elem_vr in ("SQ", "OB", "OW", "UN"):
            elem_vr = "LO"
        value = [_value_for(elem_vr, v) for v in vals]
        ds[keyword] = DataElement(pydicom.datadict.tag_for_keyword(keyword), elem_vr,
                                  value[0] if len(value) == 1 else (value or None))
    elif kind == "vr":
        value = [_value_for(vr, v) for v in vals] or [_value_for(vr, 1)]
        if vr in ("OB", "UN"):
            value = [b"".join(value)]
        ds[keyword] = DataElement(pydicom.datadict.tag_for_keyword(keyword), vr,
                                  value[0] if len(value) == 1 else value)
    elif kind == "extra":
        block = ds.private_block(0x0009, "FUZZ VENDOR", create=True)
        block.add_new(number % 200, "LO", "Vandermeer^Ottoline")
        ds.add_new(0x00540022, "SQ", Sequence([Dataset()]))  # Detector Information, empty
        ds.add_new((0x0011, 0x0000 + number % 0xFF), "UN", b"\xff" * (number % 17))
    elif kind == "length":
        ds[keyword] = DataElement(pydicom.datadict.tag_for_keyword(keyword), "LO",
                                  "A" * (number % 300))
    elif kind == "sequence":
        items = ds.get("DetectorInformationSequence") or []
        if items:
            item = items[number % len(items)]
            if number % 3 == 0:
                item.ViewCodeSequence = Sequence()
            elif number % 3 == 1:
                item.ViewCodeSequence[0].CodeValue = str(vals[0]) if vals else "399001007"
            else:
                ds.DetectorInformationSequence = Sequence(list(items) * 2)
    elif kind == "pixels" and "PixelData" in ds:
        data = bytes(ds.PixelData)
        if number % 4 == 0:
            ds.PixelData = data[: number % len(data)]
        elif number % 4 == 1:
            ds.PixelData = data + b"\x00" * (number % 64 + 2)
        elif number % 4 == 2:
            ds.PixelRepresentation = 1  # signed: part of the counts turn negative
            cut = (number % max(len(data) // 2, 1)) * 2
            ds.PixelData = b"\xff\xff" * (cut // 2) + data[cut:]
        else:
            ds.RescaleSlope, ds.RescaleIntercept = str(vals[0] if vals else 0)[:8] or "0", "-3"


SYNTAXES = {"explicit": ExplicitVRLittleEndian, "implicit": ImplicitVRLittleEndian,
            "big": ExplicitVRBigEndian, "deflated": DeflatedExplicitVRLittleEndian,
            "rle": RLELossless}


@st.composite
def nm_file(draw):
    layout = draw(st.sampled_from(["two-frame", "anterior", "posterior", "three-frame",
                                   "side-by-side", "copy"]))
    return {
        "layout": layout,
        "changes": draw(st.lists(mutation(), max_size=4)),
        "syntax": draw(st.sampled_from(list(SYNTAXES))),
        # Byte damage in about a quarter of the files each, so most reach the deeper checks.
        "cut": draw(st.one_of(st.none(), st.none(), st.none(), st.floats(0.0, 1.0))),
        "flips": draw(st.one_of(st.just([]), st.just([]), st.just([]), st.lists(
            st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), min_size=1, max_size=3))),
    }


def _side_by_side(study_uid: str) -> Dataset:
    """Both views in one NM frame, left and right, named only in the description."""
    ds = nm_dataset(PATIENT_ID, NAME, BIRTH, views=("anterior",), study_uid=study_uid)
    for keyword in ("DetectorInformationSequence", "DetectorVector", "ViewCodeSequence"):
        delattr(ds, keyword)
    ds.SeriesDescription = "WB ANT POST"
    ds.Columns = 32
    ds.PixelData = ds.PixelData * 2
    return ds


def _write(spec: dict, path: Path, study_uid: str, previous: Path | None) -> None:
    if spec["layout"] == "copy" and previous is not None:  # a second copy: a duplicate
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(previous.read_bytes())
        return
    views = {"anterior": ("anterior",), "posterior": ("posterior",),
             "three-frame": ("anterior", "posterior", "posterior")}.get(
        spec["layout"], ("anterior", "posterior"))
    ds = nm_dataset(PATIENT_ID, NAME, BIRTH, views=views, study_uid=study_uid)
    if spec["layout"] == "side-by-side":
        ds = _side_by_side(study_uid)
    syntax = SYNTAXES[spec["syntax"]]
    if syntax == RLELossless:
        ds.compress(RLELossless)
    for change in spec["changes"]:
        try:
            apply(ds, change)
        except Exception:  # a mutation pydicom will not even build is no test of the index
            continue
    if syntax != RLELossless:
        ds.file_meta.TransferSyntaxUID = syntax
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        little = syntax != ExplicitVRBigEndian
        implicit = syntax == ImplicitVRLittleEndian
        ds.save_as(path, implicit_vr=implicit, little_endian=little, enforce_file_format=True)
    except Exception:  # an unwritable mutation: write the file plain instead
        ds = nm_dataset(PATIENT_ID, NAME, BIRTH, views=views, study_uid=study_uid)
        ds.save_as(path, enforce_file_format=True)
    data = bytearray(path.read_bytes())
    for where, byte in spec["flips"]:
        data[min(int(where * len(data)), len(data) - 1)] = byte
    if spec["cut"] is not None:
        data = data[: int(spec["cut"] * len(data))]
    path.write_bytes(bytes(data))


def _holds_identity(path: Path) -> bool:
    """True when the file still gives its planted Patient ID or birth date to pydicom."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return str(ds.PatientID) == PATIENT_ID or str(ds.PatientBirthDate) == BIRTH
    except Exception:
        return False


def _report(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))  # a plain CSV: no note line before the header


@contextlib.contextmanager
def _lenient_writing():
    """Let pydicom build and write the odd values (the point of the test), quietly."""
    before = pydicom.config.settings.writing_validation_mode
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom.config.settings.writing_validation_mode = before


@settings(PROFILE)
@given(files=st.lists(nm_file(), min_size=1, max_size=4), identifying=st.booleans(),
       same_study=st.booleans(),
       options=st.lists(st.sampled_from(["--split-side-by-side", "--no-check-pixels",
                                         "--copy-files"]), unique=True))
def test_mutated_nm_files_never_break_the_index(files, identifying, same_study, options):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export = tmp / "export"
        names = []
        uid = pydicom.uid.generate_uid()
        with _lenient_writing():
            for i, spec in enumerate(files):
                name = f"{IDENTIFYING_NAMES[i]}/f{i}.dcm" if identifying else f"d{i}/f{i}.dcm"
                _write(spec, export / name, uid if same_study else pydicom.uid.generate_uid(),
                       export / names[-1] if names else None)
                names.append(name)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(export), "--out", str(tmp / "out" / "manifest.csv"),
                         "--key-file", str(tmp / "secret" / "key"), *options])
        assert code in (0, 1)
        console = (out.getvalue() + err.getvalue()).casefold()
        assert "traceback" not in console
        rows = _report(tmp / "out" / "index_report.csv")
        assert sorted(r["file"] for r in rows) == sorted(names)  # each file exactly once
        for row in rows:
            event(f"status {row['status']}")
            assert row["status"] in STATUSES, row
            assert row["reason"].startswith(row["file"] + ":") and "\n" not in row["reason"]
        manifest = (tmp / "out" / "manifest.csv").read_text().casefold()
        report = "".join(r["reason"] + r["study"] for r in rows).casefold()
        for secret in SECRETS:
            assert secret not in manifest, secret
            assert secret not in console, secret
            if not identifying:
                assert secret not in report, secret
        if identifying and any(_holds_identity(export / name) for name in names):
            assert any(r["names_patient"] == "yes" for r in rows)
            assert "name a patient" in console
        studies, problems = read_manifest(tmp / "out" / "manifest.csv") if code == 0 else ([], [])
        # A study written with an empty sex is the one a manifest reader reports (its status
        # may name an earlier warning, e.g. age_out_of_range; its reason names them all).
        sexless = any("not F or M" in r["reason"] for r in rows if r["status"] in WRITTEN)
        assert {p.status for p in problems} <= ({"bad_sex"} if sexless else set())
        for study in studies if "--no-check-pixels" not in options else []:
            # What the index checked and wrote, training and prediction can read.
            try:
                read_study_views({"anterior": study.anterior, "posterior": study.posterior})
            except DicomReadError as error:
                raise AssertionError(f"written but unreadable: {error}") from None
