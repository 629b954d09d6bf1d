"""python -m bone_age.index: a DICOM export -> a pseudonymous manifest and a per-file report."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from bone_age.data.anatomy import SINGLE_MARGIN, decide_view
from bone_age.data.dicom import read_view
from bone_age.data.labels import parse_age, study_age, study_sex
from bone_age.data.manifest import read_manifest
from bone_age.index import main
from bone_age.phantom import generate_cohort
from tests.conftest import SHARED_DICOM, needs_real_dicom, run_in_process, tiny_overrides


def _csv(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV file (the report too is a plain CSV)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def index(src: Path, out: Path, key: Path, *extra: str) -> tuple[list[dict], dict[str, dict]]:
    """Run the CLI in-process; returns manifest rows and report rows keyed by file."""
    assert main([str(src), "--out", str(out / "manifest.csv"), "--key-file", str(key),
                 *extra]) in (0, 1)
    report = _csv(out / "index_report.csv")
    by_file = {r["file"]: r for r in report}
    assert len(by_file) == len(report)  # every file exactly once
    return _csv(out / "manifest.csv"), by_file


@pytest.fixture(scope="module", params=["two-frame", "single-frame"])
def phantom(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp(request.param)
    return Path(generate_cohort(out, subjects=12, seed=5, progress=False, layout=request.param))


@pytest.fixture(scope="module")
def singles(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("singles")
    return Path(generate_cohort(out, subjects=12, seed=9, progress=False,
                                layout="single-frame")).parent / "dicom"


def test_phantom_cohort_reproduced_with_pseudonyms(phantom, tmp_path):
    link = tmp_path / "owner" / "link.csv"
    rows, report = index(phantom.parent, tmp_path / "out", tmp_path / "owner" / "key",
                         "--link-file", str(link))
    assert link.stat().st_mode & 0o777 == 0o600
    truth = {r["subject_id"]: r for r in _csv(phantom)}
    patient_of = {r["subject_id"]: r["patient_id"] for r in _csv(link)}
    assert len(rows) == len(truth) == 12
    for row in rows:
        assert row["subject_id"].startswith("BA-") and row["subject_id"] not in truth
        want = truth[patient_of[row["subject_id"]]]
        assert float(row["age"]) == float(want["age"]) and row["sex"] == want["sex"]
        for view in ("anterior", "posterior"):  # the same files, paired the same way
            # A hard link (or a symbolic one) to the very file of the export.
            assert os.path.samefile(tmp_path / "out" / row[view], phantom.parent / want[view])
    statuses = {f: r["status"] for f, r in report.items()}
    assert statuses.pop("manifest.csv") == statuses.pop("truth.csv") == "not_dicom"
    assert statuses.pop("phantom_info.json") == "not_dicom"
    assert set(statuses.values()) == {"ok"}
    studies, problems = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(studies) == 12 and not problems


def test_same_key_same_pseudonyms_other_key_others(singles, tmp_path):
    key = tmp_path / "secret" / "a.key"
    first, _ = index(singles, tmp_path / "1", key, "--no-check-pixels")
    assert key.stat().st_mode & 0o777 == 0o600
    again, _ = index(singles, tmp_path / "2", key, "--no-check-pixels")
    other, _ = index(singles, tmp_path / "3", tmp_path / "secret" / "b.key", "--no-check-pixels")
    ids = [r["subject_id"] for r in first]
    assert ids == [r["subject_id"] for r in again]
    assert not set(ids) & {r["subject_id"] for r in other}


def test_key_file_inside_the_outputs_is_refused(singles, tmp_path, capsys):
    code = main([str(singles), "--out", str(tmp_path / "manifest.csv"),
                 "--key-file", str(tmp_path / "k")])
    assert code == 2 and "must not be inside" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()


def _edit(src: Path, dst: Path, change, new_study: bool = False) -> None:
    ds = pydicom.dcmread(src)
    if new_study:
        ds.StudyInstanceUID = generate_uid()
    change(ds)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)


def _new_sop(ds) -> None:
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()


def _set(**attrs):
    def change(ds):
        for k, v in attrs.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
    return change


def test_bad_inputs_each_get_a_status_naming_the_file(singles, tmp_path):
    src, bad = singles, tmp_path / "export"
    pairs = [(src / f"PH{i:06d}_ANT.dcm", src / f"PH{i:06d}_POST.dcm") for i in range(12)]
    for i, (ant, post) in enumerate(pairs[:2]):  # two good studies, files without extension
        (bad / f"good{i}").mkdir(parents=True)
        shutil.copy(ant, bad / f"good{i}" / "IM0001")
        shutil.copy(post, bad / f"good{i}" / "IM0002")
    shutil.copy(pairs[0][0], bad / "zdup.dcm")  # same SOP UID as good0/IM0001 (kept)
    data = pairs[2][0].read_bytes()
    (bad / "trunc.dcm").write_bytes(data[: len(data) // 2])
    (bad / "notes.txt").write_text("not an image")
    (bad / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    _edit(pairs[3][0], bad / "nopix.dcm", _set(PixelData=None), new_study=True)
    _edit(pairs[3][1], bad / "ct.dcm", _set(Modality="CT"), new_study=True)
    rgb = _set(SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0,
               BitsAllocated=8, BitsStored=8, HighBit=7,
               PixelData=np.zeros((1024, 256, 3), np.uint8).tobytes())
    _edit(pairs[4][0], bad / "rgb.dcm", rgb, new_study=True)
    shutil.copy(pairs[5][0], bad / "lonely_ant.dcm")  # its posterior is missing
    (bad / "amb").mkdir()
    shutil.copy(pairs[6][0], bad / "amb" / "ant1.dcm")
    _edit(pairs[6][0], bad / "amb" / "ant2.dcm", _new_sop)
    shutil.copy(pairs[6][1], bad / "amb" / "post.dcm")
    for name, i, change in [("old", 7, _set(PatientAge="035Y")),
                            ("noage", 8, _set(PatientAge=None, PatientBirthDate=None)),
                            ("sex", 9, _set(PatientSex="O")),
                            ("zero", 10, _set(PixelData=bytes(1024 * 256 * 2))),
                            ("dates", 11, _set(PatientAge=None))]:
        ant, post = pairs[i]
        _edit(ant, bad / name / "ant.dcm", change)
        _edit(post, bad / name / "post.dcm", change)
    # A frame naming no view, alone in its study, that its anatomy cannot decide: the least
    # decided of three frames no other case uses (which one depends on the phantom's version).
    undecided = min((pairs[3][0], pairs[4][1], pairs[5][1]),
                    key=lambda f: abs(decide_view(pydicom.dcmread(f).pixel_array).score))
    assert abs(decide_view(pydicom.dcmread(undecided).pixel_array).score) < SINGLE_MARGIN
    _edit(undecided, bad / "noview.dcm",
          _set(ViewCodeSequence=None, DetectorInformationSequence=None, ImageID="",
               SeriesDescription="WB"), new_study=True)
    later = generate_uid()  # a second, later study of good1's patient

    def repeat(ds) -> None:
        _new_sop(ds)
        ds.StudyInstanceUID, ds.StudyDate = later, "20990101"

    for name, src_file in zip(("ant", "post"), pairs[1], strict=True):
        _edit(src_file, bad / "later" / f"{name}.dcm", repeat)
    rows, report = index(bad, tmp_path / "out", tmp_path / "secret" / "key")
    expected = {
        "later/ant.dcm": "repeat_study", "later/post.dcm": "repeat_study",
        "good0/IM0001": "ok", "good0/IM0002": "ok", "good1/IM0001": "ok", "good1/IM0002": "ok",
        "zdup.dcm": "duplicate", "trunc.dcm": "unreadable", "notes.txt": "not_dicom",
        "DICOMDIR": "dicomdir", "nopix.dcm": "no_pixels", "ct.dcm": "unsupported_modality",
        "rgb.dcm": "unsupported_image", "lonely_ant.dcm": "incomplete_study",
        "amb/ant1.dcm": "ambiguous_view", "amb/ant2.dcm": "ambiguous_view",
        "amb/post.dcm": "ambiguous_view", "old/ant.dcm": "age_out_of_range",
        "old/post.dcm": "age_out_of_range", "noage/ant.dcm": "no_age",
        "noage/post.dcm": "no_age", "sex/ant.dcm": "unknown_sex", "sex/post.dcm": "unknown_sex",
        "zero/ant.dcm": "empty_image", "zero/post.dcm": "empty_image",
        "dates/ant.dcm": "ok", "dates/post.dcm": "ok", "noview.dcm": "view_unknown",
    }
    assert {f: r["status"] for f, r in report.items()} == expected
    for file, row in report.items():
        assert row["reason"].startswith(f"{file}:"), row
        assert "PH0000" not in row["reason"] and "PHANTOM" not in row["reason"]
    assert "posterior" in report["lonely_ant.dcm"]["reason"]
    assert "2 candidate anterior views" in report["amb/post.dcm"]["reason"]
    by_study = {r["study"]: r for r in rows}
    assert len(rows) == 6  # good0, good1, old, noage, sex, dates
    assert by_study[report["old/ant.dcm"]["study"]]["age"] == "35"
    assert by_study[report["noage/ant.dcm"]["study"]]["age"] == ""
    assert by_study[report["sex/ant.dcm"]["study"]]["sex"] == ""
    truth = pydicom.dcmread(pairs[11][0], stop_before_pixels=True)
    assert float(by_study[report["dates/ant.dcm"]["study"]]["age"]) == parse_age(truth.PatientAge)
    _, problems = read_manifest(tmp_path / "out" / "manifest.csv")
    assert [p.status for p in problems] == ["bad_sex"]  # training reports it, too


def test_side_by_side_image_is_split_left_anterior(tmp_path):
    generate_cohort(tmp_path / "phantom", subjects=1, seed=2, workers=1, progress=False)
    src = next((tmp_path / "phantom" / "dicom").glob("*.dcm"))
    ds = pydicom.dcmread(src)
    frames = ds.pixel_array  # (2, 1024, 256): anterior, posterior
    ds.PixelData = np.ascontiguousarray(np.concatenate(list(frames), axis=1)).tobytes()
    ds.Columns, ds.NumberOfFrames = 512, 1
    for kw in ("DetectorInformationSequence", "DetectorVector", "ImageID"):
        delattr(ds, kw)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SeriesDescription = "WB ANT POST"
    ds.PatientName = "Sidebyside^Secret"
    export = tmp_path / "export"
    export.mkdir()
    ds.save_as(export / "sc", enforce_file_format=True)
    _, report = index(export, tmp_path / "plain", tmp_path / "secret" / "key")
    assert report["sc"]["status"] == "view_unknown" and "--split-side-by-side" in \
        report["sc"]["reason"]
    rows, report = index(export, tmp_path / "out", tmp_path / "secret" / "key",
                         "--split-side-by-side")
    assert report["sc"]["status"] == "ok" and len(rows) == 1
    for view in ("anterior", "posterior"):
        path = tmp_path / "out" / rows[0][view]
        assert path.parent.name == "split"
        assert np.array_equal(read_view(path, view), read_view(src, view))
        assert b"Secret" not in path.read_bytes()


def test_age_and_sex_labels():
    assert [parse_age(t) for t in ("063Y", "760M", "052W", "120D", "63", "", "0X1Y")] == \
        [63.0, 63.33, 1.0, 0.33, None, None, None]
    ds = pydicom.Dataset()
    ds.PatientBirthDate, ds.StudyDate = "19600315", "20240314"
    assert study_age(ds) == (63.0, "birth and study dates")
    ds.StudyDate, ds.AcquisitionDate = "", "20240315"
    assert study_age(ds)[0] == 64.0
    ds.PatientBirthDate = "not a date"
    assert study_age(ds) == (None, "")
    ds.PatientSex = "f"
    assert study_sex(ds) == "F"
    ds.PatientSex = "O"
    assert study_sex(ds) is None


PLANTED = {"PatientName": "Quixote^Zebulon", "PatientID": "QX-778899",
           "PatientBirthDate": "19230417", "AccessionNumber": "ACC554433",
           "OtherPatientIDs": "OTH-112233", "InstitutionName": "Saint Plantedham Hospital"}
PRIVATE_NAME = "Nomenprivatus^Ottilie"


def test_planted_identities_never_reach_any_output(cohort, tmp_path):
    """Index a planted export, train on its manifest, and search every file written."""
    manifest = cohort  # the session's 40-subject phantom (enough for 5 folds)
    export = tmp_path / "export"

    def plant(ds, i: int) -> None:
        for kw, value in PLANTED.items():
            setattr(ds, kw, value)
        ds.PatientID = f"{PLANTED['PatientID']}{i:02d}"  # one patient per study
        block = ds.private_block(0x0009, "PLANTED VENDOR", create=True)
        block.add_new(0x40, "LO", PRIVATE_NAME)

    files = sorted((manifest.parent / "dicom").glob("*.dcm"))
    for i, src in enumerate(files):
        _edit(src, export / f"img{i:02d}.dcm", lambda ds, i=i: plant(ds, i))
    _edit(files[0], export / "ct.dcm", lambda ds: (plant(ds, 99), _set(Modality="CT")(ds)),
          new_study=True)
    out = tmp_path / "out"
    rows, _ = index(export, out, tmp_path / "secret" / "key")
    assert len(rows) == 40
    run_dir = tmp_path / "run"
    run_in_process([*tiny_overrides(out / "manifest.csv", tmp_path)], run_dir)
    assert (run_dir / "metrics.json").is_file() and (run_dir / "predictions.csv").is_file()
    written = [p for d in (out, run_dir, tmp_path / "data") for p in d.rglob("*") if p.is_file()]
    assert len(written) > 5
    needles = [*PLANTED.values(), PRIVATE_NAME, "QX-77", "Quixote", "Zebulon", "Nomenprivatus"]
    planted = (export / "img00.dcm").read_bytes().lower()
    assert all(n.lower().encode() in planted for n in needles)  # the search can find them
    exported = {(f.stat().st_dev, f.stat().st_ino) for f in export.iterdir()}
    for path in written:
        # links/ holds the export's own files (hard links: the same inodes) or symbolic links,
        # whose only content is their target's path.
        if not path.is_symlink() and (path.stat().st_dev, path.stat().st_ino) in exported:
            continue
        data = (os.readlink(path).encode() if path.is_symlink() else path.read_bytes()).lower()
        for needle in needles:
            assert needle.lower().encode() not in data, (path, needle)


@needs_real_dicom
def test_real_export_is_reported_file_by_file_without_identity(tmp_path):
    rows, report = index(SHARED_DICOM, tmp_path / "out", tmp_path / "secret" / "key")
    # One view of one patient, with no view named anywhere: nothing can be written.
    assert rows == [] and set(report) == {"README.md", *(f"NM1_{s}" for s in
                                                          ("UNC", "RLE", "JPLL", "JLSL", "J2KR"))}
    assert report["README.md"]["status"] == "not_dicom"
    assert {r["status"] for f, r in report.items() if f != "README.md"} <= {"view_unknown",
                                                                              "duplicate"}
    ds = pydicom.dcmread(SHARED_DICOM / "NM1_UNC", stop_before_pixels=True)
    secrets = [str(ds.get(kw, "")) for kw in ("PatientName", "PatientID")]
    secrets.append(str(ds[0x0009, 0x1040].value) if (0x0009, 0x1040) in ds else "")
    text = (tmp_path / "out" / "index_report.csv").read_text()
    assert all(s not in text for s in secrets if len(s) > 3)
