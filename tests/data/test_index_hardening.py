"""python -m bone_age.index on hostile exports: every path one row, no traceback, no identity."""

from __future__ import annotations

import csv
import os
import socket
import stat
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian, RLELossless

import bone_age.data.index_outputs as index_outputs
import bone_age.data.index_studies as index_studies
import bone_age.data.index_walk as index_walk
import bone_age.data.instances as instances
from bone_age.data.dicom import (
    DicomReadError,
    frame_views,
    frames_by_view,
    read_study_views,
    read_view,
    values,
)
from bone_age.data.manifest import read_manifest
from bone_age.data.pseudonym import exposure_warning
from bone_age.index import main
from bone_age.utils import outputs
from tests.conftest import SHARED_DICOM
from tests.nm_files import ROWS, nm_dataset, write


def read_report(path: Path) -> tuple[str, dict[str, dict[str, str]]]:
    """The report's header line and its rows keyed by file (each file exactly once)."""
    with path.open(newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        rows = list(csv.DictReader(f))  # a plain CSV, as pandas and spreadsheets read it
    by_file = {r["file"]: r for r in rows}
    assert len(by_file) == len(rows), "a path appears twice"
    return first, by_file


def run_index(export: Path, out: Path, *extra: str, code: tuple[int, ...] = (0, 1),
              key: Path | None = None):
    rc = main([str(export), "--out", str(out / "manifest.csv"),
               "--key-file", str(key or out.parent / "secret" / "key"), *extra])
    assert rc in code
    first, report = read_report(out / "index_report.csv")
    with (out / "manifest.csv").open(newline="") as f:
        return list(csv.DictReader(f)), first, report


def statuses(report: dict[str, dict[str, str]]) -> dict[str, str]:
    return {f: r["status"] for f, r in report.items()}


# 1. Values of any multiplicity; one bad file never stops the run ---------------------------

def test_values_of_any_multiplicity():
    ds = Dataset()
    ds.DetectorVector = 1  # pydicom keeps a single value as a plain int
    assert not isinstance(ds.DetectorVector, MultiValue) and values(ds, "DetectorVector") == [1]
    ds.DetectorVector = [1, 2]
    assert values(ds, "DetectorVector") == [1, 2]
    ds.DetectorVector = None
    assert values(ds, "DetectorVector") == []
    assert values(ds, "ImageID") == []  # absent
    ds.ImageID = ""
    assert values(ds, "ImageID") == []


def test_multiframe_with_a_single_detector_value_is_read_not_crashed(tmp_path):
    ds = nm_dataset()
    ds.DetectorVector = 1  # two frames, one detector value (as the real scan's header holds)
    path = write(ds, tmp_path / "export" / "wb.dcm")
    head = pydicom.dcmread(path, stop_before_pixels=True)
    assert head.DetectorVector == 1 and head.NumberOfFrames == 2
    assert frame_views(head) == {"anterior": 0}  # frame 2 has no detector, so no view
    assert read_view(path, "anterior").shape == (ROWS, 16)
    with pytest.raises(DicomReadError, match="no frame is marked as the posterior view"):
        read_view(path, "posterior")
    _, _, report = run_index(tmp_path / "export", tmp_path / "out")
    assert report["wb.dcm"]["status"] == "incomplete_study"


@pytest.mark.skipif(not SHARED_DICOM.is_dir(), reason="../shared/data/real-dicom not present")
def test_real_scan_made_multiframe_keeps_its_single_detector_value(tmp_path):
    ds = pydicom.dcmread(SHARED_DICOM / "NM1_UNC")
    assert ds.DetectorVector == 1
    ds.PixelData = ds.PixelData * 2
    ds.NumberOfFrames = 2
    path = write(ds, tmp_path / "export" / "nm2")
    _, _, report = run_index(tmp_path / "export", tmp_path / "out")
    assert report["nm2"]["status"] == "view_unknown"  # it names no view anywhere
    with pytest.raises(DicomReadError, match="no frame is marked"):
        read_view(path, "anterior")


def test_a_file_failing_in_any_way_is_one_row_and_the_others_go_on(tmp_path, monkeypatch):
    export = tmp_path / "export"
    for i in range(3):
        write(nm_dataset(f"P{i}", seed=i), export / f"s{i}.dcm")
    bad = nm_dataset("P9")
    bad[0x00280008] = DataElement(0x00280008, "LO", "two")  # Number of Frames, VR changed
    write(bad, export / "bad_frames.dcm")
    real = instances.frames_by_view

    def flaky(ds, path="<dataset>"):
        if str(path).endswith("s1.dcm"):
            raise RuntimeError("an unforeseen failure")
        return real(ds, path)

    monkeypatch.setattr(instances, "frames_by_view", flaky)
    rows, _, report = run_index(export, tmp_path / "out")
    assert len(rows) == 2
    assert statuses(report) == {"s0.dcm": "ok", "s1.dcm": "unreadable", "s2.dcm": "ok",
                                "bad_frames.dcm": "unreadable"}
    assert report["s1.dcm"]["reason"] == "s1.dcm: damaged DICOM header (RuntimeError)"
    assert "NumberOfFrames is not a whole number" in report["bad_frames.dcm"]["reason"]


def test_a_study_failing_in_any_way_fails_alone(tmp_path, monkeypatch):
    export = tmp_path / "export"
    write(nm_dataset("P0", seed=0), export / "a.dcm")
    write(nm_dataset("P1", seed=1), export / "b.dcm")
    real = index_studies.study_age

    def flaky(ds):
        if ds.PatientID == "P1":
            raise KeyError("an unforeseen failure")
        return real(ds)

    monkeypatch.setattr(index_studies, "study_age", flaky)
    rows, _, report = run_index(export, tmp_path / "out")
    assert len(rows) == 1
    assert statuses(report) == {"a.dcm": "ok", "b.dcm": "unreadable"}
    assert report["b.dcm"]["reason"].endswith("cannot be used (KeyError)")
    assert report["b.dcm"]["subject_id"] == ""


class _Panic(BaseException):
    """Like pyo3's PanicException, raised by Rust decoders (pylibjpeg-rle) on bad input."""


def test_a_decoder_panic_is_a_read_error_not_a_crash(tmp_path, monkeypatch):
    export = tmp_path / "export"
    write(nm_dataset("P0"), export / "a.dcm")
    write(nm_dataset("P1", seed=1), export / "b.dcm")

    def panic(arr, ds):
        if ds.PatientID == "P1":
            raise _Panic("index out of bounds: the len is 2048 but the index is 2048")
        return arr

    monkeypatch.setattr("bone_age.data.dicom.apply_modality_lut", panic)
    with pytest.raises(DicomReadError, match="cannot be decoded .*_Panic: index out of"):
        read_view(export / "b.dcm", "anterior")
    rows, _, report = run_index(export, tmp_path / "out")
    assert statuses(report) == {"a.dcm": "ok", "b.dcm": "unreadable"} and len(rows) == 1


# 2. Deflated files are not "truncated" --------------------------------------------------

@pytest.mark.parametrize("check", [True, False])
def test_deflated_file_is_indexed_and_a_cut_one_is_not(tmp_path, check):
    export = tmp_path / "export"
    ds = nm_dataset("P0")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = write(ds, export / "deflated.dcm")
    assert path.stat().st_size < ROWS * 16 * 2 * 2  # smaller than its native pixel data
    data = path.read_bytes()
    (export / "cut_deflated.dcm").write_bytes(data[: len(data) * 2 // 3])
    plain = write(nm_dataset("P1", seed=1), export / "native.dcm").read_bytes()
    (export / "cut_native.dcm").write_bytes(plain[:-100])  # ends inside the pixel data
    extra = () if check else ("--no-check-pixels",)
    rows, _, report = run_index(export, tmp_path / "out", *extra)
    assert statuses(report) == {"deflated.dcm": "ok", "native.dcm": "ok",
                                "cut_deflated.dcm": "unreadable", "cut_native.dcm": "unreadable"}
    assert "truncated" in report["cut_native.dcm"]["reason"]
    assert len(rows) == 2


def test_pixel_data_shorter_than_its_header_says(tmp_path):
    ds = nm_dataset()
    ds.PixelData = ds.PixelData[:-64]  # the file ends cleanly, the element is short
    write(ds, tmp_path / "export" / "short.dcm")
    _, _, report = run_index(tmp_path / "export", tmp_path / "out", "--no-check-pixels")
    assert report["short.dcm"]["status"] == "unreadable"
    assert "truncated" in report["short.dcm"]["reason"]


# 3. Every path once: folders that cannot be read, links, special files ------------------

def test_every_path_below_the_export_is_one_row(tmp_path, monkeypatch):
    export = tmp_path / "export"
    write(nm_dataset("P0"), export / "good" / "a.dcm")
    write(nm_dataset("P1", seed=1), export / "locked" / "b.dcm")
    (export / "dangling").symlink_to(tmp_path / "nowhere.dcm")
    (export / "self").symlink_to(export / "self")  # a link to itself: ELOOP
    (export / "good" / "up").symlink_to(export)  # a folder link into its own ancestor
    (export / "again").symlink_to(export / "good")  # the same folder a second time
    (export / "alias.dcm").symlink_to(export / "good" / "a.dcm")  # a file link: read
    os.mkfifo(export / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(export / "sock"))
    real = os.scandir
    locked = str(export / "locked")

    def scandir(path="."):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(index_walk.os, "scandir", scandir)
    try:
        rows, _, report = run_index(export, tmp_path / "out")
    finally:
        sock.close()
    # The folder link 'again' sorts before 'good', so the link is walked and 'good' is the
    # folder met a second time.
    assert statuses(report) == {
        "again/a.dcm": "ok", "again/up": "link_loop", "good": "duplicate",
        "alias.dcm": "duplicate", "dangling": "broken_link", "self": "broken_link",
        "fifo": "not_a_file", "sock": "not_a_file", "locked": "unreadable_folder",
    }
    assert "Permission denied" in report["locked"]["reason"]
    assert "a FIFO" in report["fifo"]["reason"] and "a socket" in report["sock"]["reason"]
    assert "loops" in report["self"]["reason"]
    assert len(rows) == 1


# 4. Silent choices are reported ----------------------------------------------------------

def test_two_frames_with_the_same_view_are_ambiguous_like_two_files(tmp_path):
    export = tmp_path / "export"
    ds = nm_dataset(views=("anterior", "posterior", "posterior"))
    write(ds, export / "three.dcm")
    _, _, report = run_index(export, tmp_path / "out")
    assert report["three.dcm"]["status"] == "ambiguous_view"
    assert "three.dcm frame 2, three.dcm frame 3" in report["three.dcm"]["reason"]
    with pytest.raises(DicomReadError, match="frames 2, 3 are all marked as the posterior"):
        read_view(export / "three.dcm", "posterior")
    assert read_view(export / "three.dcm", "anterior").shape == (ROWS, 16)  # that one is clear


def test_negative_counts_are_reported_and_refused_not_trained_on(tmp_path):
    export = tmp_path / "export"
    ds = nm_dataset("P0")
    ds.RescaleIntercept, ds.RescaleSlope = "-5", "1"  # the background drops below zero
    write(ds, export / "neg.dcm")
    write(nm_dataset("P1", seed=1), export / "fine.dcm")
    rows, _, report = run_index(export, tmp_path / "out")
    assert report["neg.dcm"]["status"] == "negative_counts"
    assert "pixels below zero (lowest -5)" in report["neg.dcm"]["reason"]
    assert len(rows) == 1
    with pytest.raises(DicomReadError, match="below zero"):  # a hand-made manifest: refused
        read_study_views({"anterior": export / "neg.dcm"})


def _side_by_side(modality: str, rows: int, cols: int) -> Dataset:
    ds = nm_dataset(views=("anterior",))
    for kw in ("DetectorInformationSequence", "DetectorVector", "ViewCodeSequence"):
        delattr(ds, kw)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality, ds.SeriesDescription = modality, "WB ANT POST"
    ds.Rows, ds.Columns = rows, cols
    ds.PixelData = np.full((rows, cols), 7, "<u2").tobytes()
    return ds


def test_split_side_by_side_takes_only_nm_whole_body_pairs(tmp_path):
    export = tmp_path / "export"
    write(_side_by_side("OT", 512, 512), export / "ot_square.dcm")
    write(_side_by_side("NM", 512, 512), export / "nm_square.dcm")
    write(_side_by_side("OT", 256, 128), export / "ot_pair.dcm")
    write(_side_by_side("NM", 256, 128), export / "nm_pair.dcm")
    rows, _, report = run_index(export, tmp_path / "out", "--split-side-by-side")
    assert statuses(report) == {"ot_square.dcm": "not_side_by_side",
                                "nm_square.dcm": "not_side_by_side",
                                "ot_pair.dcm": "not_side_by_side", "nm_pair.dcm": "ok"}
    assert "modality is not NM" in report["ot_pair.dcm"]["reason"]
    assert "512 x 512 pixels are not two whole-body views" in report["nm_square.dcm"]["reason"]
    assert len(rows) == 1 and rows[0]["anterior"].startswith("split/")


# 5. Outputs that cannot be written: one line, exit 2, before any work; never half-written --

@pytest.mark.parametrize("option", ["--out", "--report", "--link-file"])
def test_output_under_an_existing_file_is_refused_before_any_work(tmp_path, capsys,
                                                                  monkeypatch, option):
    write(nm_dataset(), tmp_path / "export" / "a.dcm")
    (tmp_path / "somefile.txt").write_text("x")
    monkeypatch.setattr("bone_age.index.index_folder",
                        lambda *a, **k: pytest.fail("indexed despite a bad output"))
    paths = {"--out": tmp_path / "out" / "manifest.csv", "--report": tmp_path / "out" / "r.csv",
             "--link-file": tmp_path / "owner" / "link.csv"}
    paths[option] = tmp_path / "somefile.txt" / "x.csv"
    args = [str(tmp_path / "export"), "--key-file", str(tmp_path / "secret" / "key")]
    for name, path in paths.items():
        args += [name, str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "somefile.txt is a file, not a folder" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "secret").exists()


def test_a_failed_write_leaves_no_output_behind(tmp_path, monkeypatch, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    write(nm_dataset(), export / "a.dcm")
    rows, _, report = run_index(export, out)  # a first, complete run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    write(nm_dataset("P2", seed=2), export / "b.dcm")

    def broken(result):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(index_outputs, "report_text", broken)
    assert run_index_rc(export, out) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in out.iterdir()) == ["index_report.csv", "links",
                                                     "manifest.csv"]
    assert len(list((out / "links").iterdir())) == 1  # the first run's link, untouched


def run_index_rc(export: Path, out: Path, *extra: str) -> int:
    return main([str(export), "--out", str(out / "manifest.csv"),
                 "--key-file", str(out.parent / "secret" / "key"), *extra])


def test_rerun_replaces_links_and_refuses_a_foreign_links_folder(tmp_path, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    write(nm_dataset("P0"), export / "a.dcm")
    write(nm_dataset("P1", seed=1), export / "b.dcm")
    rows, _, _ = run_index(export, out)
    assert len(list((out / "links").iterdir())) == 2
    (export / "b.dcm").unlink()
    rows, _, _ = run_index(export, out)
    assert [p.name for p in (out / "links").iterdir()] == [f"{rows[0]['subject_id']}.dcm"]
    (out / "links" / "mine.txt").write_text("a file of the user's")
    assert run_index_rc(export, out) == 2
    assert "holds files the index did not write" in capsys.readouterr().err


# 6. A key file others can read ----------------------------------------------------------

def test_key_readable_by_others_is_used_with_a_warning(tmp_path, capsys):
    write(nm_dataset(), tmp_path / "export" / "a.dcm")
    key = tmp_path / "secret" / "key"
    run_index(tmp_path / "export", tmp_path / "out1")
    assert "warning" not in capsys.readouterr().err  # created 0600
    first = (tmp_path / "out1" / "manifest.csv").read_text()
    key.chmod(0o644)
    run_index(tmp_path / "export", tmp_path / "out2")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "accessible to group/others" in err[0]
    assert f"chmod 600 {key}" in err[0]
    assert (tmp_path / "out2" / "manifest.csv").read_text() == first  # same pseudonyms
    key.chmod(0o600)
    assert exposure_warning(key) is None


# 7. Paths named after the patient --------------------------------------------------------

IDENTITY = {"patient_id": "QZ-4471", "name": "Vandermeer^Ottoline^Marie", "birth": "19310522"}
FORMS = ["QZ-4471", "qz4471", "Vandermeer", "OTTOLINE", "marie", "1931-05-22", "19310522",
         "22.05.1931"]


@pytest.mark.parametrize("copy", [False, True])
def test_paths_naming_the_patient_never_reach_the_manifest(tmp_path, copy, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    ident = dict(IDENTITY)
    write(nm_dataset(ident["patient_id"], ident["name"], ident["birth"]),
          export / "VANDERMEER_OTTOLINE" / "QZ-4471.dcm")
    ds = nm_dataset("AB-0001", "Other^Person", "19500101", views=("anterior",), seed=1)
    uid = ds.StudyInstanceUID
    write(ds, export / "1931-05-22" / "ant.dcm")  # another patient's file, in a date folder
    post = nm_dataset("AB-0001", "Other^Person", "19500101", views=("posterior",), seed=2,
                      study_uid=uid)
    write(post, export / "neutral" / "post.dcm")
    (export / "notes_marie.txt").write_text("not an image")
    extra = ("--copy-files",) if copy else ()
    rows, first, report = run_index(export, out, *extra)
    console = capsys.readouterr().out
    assert len(rows) == 2
    text = (out / "manifest.csv").read_text().casefold()
    for form in FORMS:
        assert form.casefold() not in text
    flagged = {f for f, r in report.items() if r["names_patient"] == "yes"}
    assert flagged == {"VANDERMEER_OTTOLINE/QZ-4471.dcm", "1931-05-22/ant.dcm",
                       "notes_marie.txt"}
    assert first.startswith("file,status,")  # plain CSV; the note is on the console
    assert "3 of 4 paths below the export name a patient" in console
    assert (out / "index_report.csv").stat().st_mode & 0o077 == 0  # owner-only, like the key
    studies, problems = read_manifest(out / "manifest.csv")
    assert not problems
    sources = {p.name: p for p in export.rglob("*.dcm")}
    for study in studies:  # training and predict read the linked (or copied) files
        assert study.anterior.parent == out / "links"
        linked = any(os.path.samefile(study.anterior, src) for src in sources.values())
        assert linked != copy and not study.anterior.is_symlink()  # hard link or copy
        views = read_study_views({"anterior": study.anterior, "posterior": study.posterior})
        assert views["anterior"].max() > 0
    # The reasons of a manifest-based reader name the link, never the export's path.
    for row in rows:
        (out / row["anterior"]).unlink()
    _, problems = read_manifest(out / "manifest.csv")
    assert problems and all("QZ" not in str(p) and "VANDER" not in str(p) for p in problems)


def test_report_says_when_no_path_names_a_patient(tmp_path, capsys):
    write(nm_dataset(), tmp_path / "export" / "IM0001")
    _, first, report = run_index(tmp_path / "export", tmp_path / "out")
    assert first.startswith("file,status,")
    assert "no path below the export names a patient" in capsys.readouterr().out
    assert list(report) == ["IM0001"]  # read by a plain csv.DictReader, no comment skipping
    assert report["IM0001"]["names_patient"] == ""


def test_identity_in_a_damaged_file_is_not_quoted(tmp_path, capsys):
    """pydicom's warnings quote malformed values; none may reach the output or the console."""
    ds = nm_dataset("QZ-4471", "Vandermeer^Ottoline", "19310522")
    ds.PatientName = "Vandermeer"
    path = write(ds, tmp_path / "export" / "IM0001")
    # The name's VR made IS (integer string): pydicom's reading warning would quote it.
    data = path.read_bytes()
    assert data.count(b"\x10\x00\x10\x00PN") == 1
    path.write_bytes(data.replace(b"\x10\x00\x10\x00PN", b"\x10\x00\x10\x00IS"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_index(tmp_path / "export", tmp_path / "out")
        again = pydicom.dcmread(path)  # as predict and training read a file
        assert str(again.PatientName) == "Vandermeer"
    captured = capsys.readouterr()
    written = "".join(p.read_text() for p in (tmp_path / "out").glob("*.csv"))
    shown = [str(w.message) for w in caught]
    for text in (captured.out, captured.err, written, *shown):
        assert "1931" not in text and "Vandermeer" not in text


@pytest.mark.parametrize("option", ["--out", "--report", "--link-file", "--links-dir"])
def test_an_output_inside_the_export_is_refused_and_the_scan_kept(tmp_path, capsys, option):
    export = tmp_path / "export"
    write(nm_dataset(), export / "ant.dcm")
    scan = (export / "ant.dcm").read_bytes()
    paths = {"--out": tmp_path / "out" / "manifest.csv", "--report": tmp_path / "out" / "r.csv",
             "--link-file": tmp_path / "owner" / "link.csv",
             "--links-dir": tmp_path / "beside" / "links"}
    paths[option] = export / "ant.dcm"
    args = [str(export), "--key-file", str(tmp_path / "secret" / "key")]
    for name, path in paths.items():
        args += [name, str(path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "inside the input folder" in err, err
    assert (export / "ant.dcm").read_bytes() == scan and sorted(os.listdir(export)) == ["ant.dcm"]
    paths[option] = export / "derived" / "new.csv"  # a new file anywhere below it, too
    assert main([*args[:3], *[a for n, p in paths.items() for a in (n, str(p))]]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and sorted(os.listdir(export)) == ["ant.dcm"]


@pytest.mark.parametrize("option", ["--out", "--report", "--link-file"])
def test_a_fifo_or_device_is_never_replaced_by_an_output(tmp_path, capsys, option):
    export = tmp_path / "export"
    write(nm_dataset(), export / "a.dcm")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    paths = {"--out": tmp_path / "out" / "manifest.csv", "--report": tmp_path / "out" / "r.csv",
             "--link-file": tmp_path / "owner" / "link.csv"}
    for special in (fifo, Path("/dev/null")):
        paths[option] = special
        args = [str(export), "--key-file", str(tmp_path / "secret" / "key")]
        for name, path in paths.items():
            args += [name, str(path)]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not a regular file" in err, err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not (tmp_path / "out").exists()


def test_leftover_files_of_a_killed_index_go_and_users_files_stay(tmp_path, capsys):
    export, out = tmp_path / "export", tmp_path / "out"
    write(nm_dataset(), export / "a.dcm")
    proc = subprocess.Popen(["true"])
    proc.wait()  # a process that is gone, like a killed index
    tag = f"{outputs.TEMP_MARK}.{outputs._HOST}-{proc.pid}"
    staged = out / f".links.{tag}-0"  # links staged with full headers: a folder, so told of
    staged.mkdir(parents=True)
    (staged / "BA-0123.dcm").write_bytes((export / "a.dcm").read_bytes())
    (out / f".manifest.csv.{tag}-1").write_text("half")
    users = [".thesis.docx.2024.tmp", f".report.{proc.pid}.tmp",
             f".notes.{outputs._HOST}-{proc.pid}-1.tmp"]
    for name in users:
        (out / name).write_text("a user's file")
    (out / ".archive.2019.tmp").mkdir()
    (out / ".archive.2019.tmp" / "x").write_text("a user's file")
    run_index(export, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*users, ".archive.2019.tmp", staged.name, "index_report.csv", "links", "manifest.csv"])
    assert (out / ".archive.2019.tmp" / "x").is_file()
    notes = [line for line in capsys.readouterr().err.splitlines() if "note:" in line]
    assert len(notes) == 1 and staged.name in notes[0], notes


def test_a_file_name_that_is_not_utf8_is_reported_not_fatal(tmp_path):
    export = tmp_path / "export"
    write(nm_dataset(), export / "a.dcm")
    (export / os.fsdecode(b"caf\xe9.txt")).write_text("a Latin-1 file name")
    _, _, report = run_index(export, tmp_path / "out")
    assert statuses(report) == {"a.dcm": "ok", "caf\\xe9.txt": "not_dicom"}


@pytest.mark.parametrize("identifying", [False, True])
def test_without_hard_links_a_path_naming_the_patient_is_copied(tmp_path, monkeypatch,
                                                                identifying):
    """A symbolic link stores its target's path, which may name the patient: copied then."""
    export = tmp_path / "export"
    folder = "VANDERMEER_OTTOLINE" if identifying else "study1"
    write(nm_dataset(IDENTITY["patient_id"], IDENTITY["name"], IDENTITY["birth"]),
          export / folder / "IM1")

    def no_hard_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(index_outputs.os, "link", no_hard_links)
    rows, _, _ = run_index(export, tmp_path / "out")
    link = tmp_path / "out" / rows[0]["anterior"]
    assert link.is_symlink() != identifying
    if not identifying:
        assert os.readlink(link) == str((export / folder / "IM1").resolve())
    for path in (tmp_path / "out" / "links").iterdir():
        text = os.readlink(path) if path.is_symlink() else ""
        assert "VANDERMEER" not in text.upper()


def test_a_header_claiming_a_huge_image_is_refused_without_decoding(tmp_path):
    """2**31 frames or 65535 x 65535 pixels would make the views or the decoder take all
    memory; such a file is reported as it is, and nothing large is built."""
    export = tmp_path / "export"
    frames = nm_dataset("P0")
    frames.NumberOfFrames = 2**31 - 1
    del frames.DetectorVector
    write(frames, export / "frames.dcm")
    big = nm_dataset("P1", seed=1)
    big.compress(RLELossless)
    big.Rows = big.Columns = 65535
    write(big, export / "big.dcm")
    assert frames_by_view(pydicom.dcmread(export / "frames.dcm")) == {"anterior": [0],
                                                                      "posterior": [1]}
    with pytest.raises(DicomReadError, match="larger than any whole-body scan"):
        read_view(export / "big.dcm", "anterior")
    _, _, report = run_index(export, tmp_path / "out")
    assert statuses(report) == {"frames.dcm": "unsupported_image",
                                "big.dcm": "unsupported_image"}
