"""Cameras that write no view code: the index decides the view from the anatomy (or --view)."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from bone_age.data.anatomy import PAIR_MARGIN
from bone_age.data.identifiers import PathChecker
from bone_age.index import main
from bone_age.phantom import generate_cohort
from tests.conftest import SHARED_DICOM

REAL = SHARED_DICOM / "NM1_UNC"
real_scan = pytest.mark.skipif(not REAL.is_file(), reason="../shared/data/real-dicom absent")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))  # plain CSVs: no comment line


def run(export: Path, out: Path, *extra: str, code: int | None = None):
    rc = main([str(export), "--out", str(out / "manifest.csv"),
               "--key-file", str(out.parent / "secret" / "key"), *extra])
    if code is not None:
        assert rc == code
    report = {r["file"]: r for r in _rows(out / "index_report.csv")}
    return _rows(out / "manifest.csv"), report


def strip_view(ds: pydicom.Dataset) -> pydicom.Dataset:
    """What a camera that writes no view code sends: no View Code Sequence, no view words."""
    for keyword in ("ViewCodeSequence", "SeriesDescription", "ImageID"):
        if keyword in ds:
            delattr(ds, keyword)
    for item in ds.get("DetectorInformationSequence", []):
        if "ViewCodeSequence" in item:
            del item.ViewCodeSequence
    return ds


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """4 phantom subjects, one file per view, view codes stripped and neutral names; returns
    the export and each file's true view."""
    src = tmp_path_factory.mktemp("ph")
    generate_cohort(src, subjects=4, seed=11, progress=False, layout="single-frame")
    export = tmp_path_factory.mktemp("export")
    truth = {}
    for n, path in enumerate(sorted((src / "dicom").glob("*.dcm"))):
        ds = strip_view(pydicom.dcmread(path))
        name = f"IM{n:04d}"
        ds.save_as(export / name)
        truth[name] = "anterior" if "_ANT" in path.name else "posterior"
    return export, truth


def test_views_of_unlabelled_studies_come_from_the_anatomy(phantom, tmp_path):
    export, truth = phantom
    rows, report = run(export, tmp_path / "out", code=0)
    assert len(rows) == 4
    for name, view in truth.items():
        r = report[name]
        assert (r["status"], r["view"], r["view_from"]) == ("ok", view, "anatomy"), r
        assert float(r["view_margin"]) >= PAIR_MARGIN
    for row in rows:  # the manifest's anterior column holds the anterior file
        ant = tmp_path / "out" / row["anterior"]
        name = next(n for n in truth if os.path.samefile(export / n, ant))
        assert truth[name] == "anterior"


def test_one_unlabelled_view_beside_a_labelled_one(tmp_path):
    src = tmp_path / "src"
    generate_cohort(src, subjects=1, seed=2, progress=False, layout="single-frame")
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(next((src / "dicom").glob("*_ANT.dcm")), export / "a.dcm")
    strip_view(pydicom.dcmread(next((src / "dicom").glob("*_POST.dcm")))).save_as(export / "b")
    rows, report = run(export, tmp_path / "out", code=0)
    assert len(rows) == 1
    assert (report["a.dcm"]["view_from"], report["b"]["view_from"]) == ("header", "anatomy")
    assert report["b"]["view"] == "posterior"


def test_view_option_for_folders_of_one_view(phantom, tmp_path):
    export, truth = phantom
    split = tmp_path / "split"
    for name, view in truth.items():
        (split / view[:3]).mkdir(parents=True, exist_ok=True)
        shutil.copy(export / name, split / view[:3] / name)
    rows, report = run(split, tmp_path / "out", "--view", "ant=anterior",
                       "--view", f"{split / 'pos'}/=POSTERIOR", code=0)
    assert len(rows) == 4
    assert {(r["view"], r["view_from"]) for r in report.values()} == {
        ("anterior", "option"), ("posterior", "option")}


@pytest.mark.parametrize("bad", ["lateral", "nowhere=anterior", "ant=anterior,posterior"])
def test_bad_view_option_is_one_line(phantom, tmp_path, capsys, bad):
    export, _ = phantom
    (export.parent / "ant").mkdir(exist_ok=True)
    rc = main([str(export), "--out", str(tmp_path / "o" / "m.csv"), "--key-file",
               str(tmp_path / "k" / "k"), "--view", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bone-age index: --view")


@real_scan
def test_real_scan_without_view_code(tmp_path):
    """The NEMA NM1 scan names no view: alone, its anatomy suggests anterior but is not sure
    enough (it says so and asks for --view); with --view its one view makes an incomplete
    study; beside a posterior of the same study the anatomy decides it; and its file name
    "NM1_UNC" is not taken for the patient's name "CompressedSamples^NM1"."""
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(REAL, export / "NM1_UNC")
    _, report = run(export, tmp_path / "a", code=1)
    r = report["NM1_UNC"]
    assert r["status"] == "view_unknown" and "suggests anterior" in r["reason"]
    assert "--view" in r["reason"] and r["names_patient"] == ""
    _, report = run(export, tmp_path / "b", "--view", "anterior", code=1)
    r = report["NM1_UNC"]
    assert (r["status"], r["view"], r["view_from"]) == ("incomplete_study", "anterior", "option")
    # A posterior view of the same patient and study (a phantom frame carrying its identity).
    generate_cohort(tmp_path / "ph", subjects=1, seed=0, progress=False, layout="single-frame")
    ds = strip_view(pydicom.dcmread(next((tmp_path / "ph" / "dicom").glob("*_POST.dcm"))))
    real = pydicom.dcmread(REAL, stop_before_pixels=True)
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        setattr(ds, keyword, real.get(keyword))
    ds.save_as(export / "IM2")
    rows, report = run(export, tmp_path / "c", code=0)
    assert len(rows) == 1
    assert (report["NM1_UNC"]["view"], report["NM1_UNC"]["view_from"]) == ("anterior", "anatomy")
    assert report["IM2"]["view"] == "posterior"


@real_scan
def test_short_name_parts_with_digits_are_no_names():
    checker = PathChecker()
    checker.add(pydicom.dcmread(REAL, stop_before_pixels=True))
    assert not any(checker.names_patient(p) for p in ("NM1_UNC", "NM1/IM1", "nm_wb_ant"))
    assert checker.names_patient("CompressedSamples/IM1")  # the real name part still counts
    assert checker.names_patient("8NM1.dcm")  # so does the Patient ID


# Issue 27, item 5: identifying fields in their common spellings, and link targets ----------

SPELLINGS = {  # folder name -> what it is
    "ACC-778812": "accession number",
    "STUDY_94411": "Study ID",
    "Sankt_Joergen_Klinik": "institution (umlaut spelt out)",
    "4471": "Patient ID without its leading zeros",
    "JOSE_MULLER": "transliterated name, parts in another order",
    "5-3-1931": "birth date as D-M-YYYY",
    "05.03.1931": "birth date as DD.MM.YYYY",
    "OLD-55123": "Other Patient IDs",
}


def _identity(ds: pydicom.Dataset) -> pydicom.Dataset:
    ds.PatientID, ds.OtherPatientIDs = "0004471", "OLD-55123"
    ds.PatientName, ds.PatientBirthDate = "Müller^José", "19310305"
    ds.AccessionNumber, ds.StudyID = "ACC778812", "94411"
    ds.InstitutionName = "Sankt Jörgen Klinik"
    return ds


@pytest.mark.parametrize("folder", sorted(SPELLINGS))
def test_paths_in_common_spellings_are_flagged_and_never_link_targets(tmp_path, monkeypatch,
                                                                      folder):
    """A cross-filesystem export (hard links fail): a symbolic link's target would name the
    patient, so the file is copied; the report flags the path."""
    from tests.nm_files import nm_dataset, write

    export = tmp_path / "export"
    write(_identity(nm_dataset()), export / folder / "IM1")
    write(nm_dataset("AB-0001", "Other^Person", "19500101"), export / "neutral" / "IM2")

    def no_hard_links(*_):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    rows, report = run(export, tmp_path / "out", code=0)
    assert len(rows) == 2
    assert report[f"{folder}/IM1"]["names_patient"] == "yes", SPELLINGS[folder]
    assert report["neutral/IM2"]["names_patient"] == ""
    links = list((tmp_path / "out" / "links").iterdir())
    targets = [os.readlink(p) for p in links if p.is_symlink()]
    assert len(targets) == 1 and folder not in targets[0]  # the neutral one may be a link
    assert not any(folder in t for t in targets)


def test_short_ids_and_initials_are_not_identifiers():
    from tests.nm_files import nm_dataset

    checker = PathChecker()
    checker.add(nm_dataset("07", "A^B", "19500101"))
    assert not any(checker.names_patient(p) for p in ("IM_07", "7", "a/b", "series_7/IM1"))


# Issue 26, item 7: the report is a plain CSV; links kept apart from the shareable outputs ----


def test_report_is_plain_csv_and_links_dir_keeps_headers_out_of_the_manifest_folder(
        tmp_path, capsys):
    from tests.nm_files import nm_dataset, write

    export = tmp_path / "export"
    write(nm_dataset("QZ-4471", "Vandermeer^Ottoline", "19310522"), export / "QZ-4471" / "IM1")
    beside = tmp_path / "export-links"
    rc = main([str(export), "--out", str(tmp_path / "out" / "manifest.csv"), "--key-file",
               str(tmp_path / "secret" / "key"), "--links-dir", str(beside)])
    assert rc == 0
    console = capsys.readouterr().out
    with (tmp_path / "out" / "index_report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))  # no comment line to skip
    assert [r["file"] for r in rows] == ["QZ-4471/IM1"] and rows[0]["names_patient"] == "yes"
    assert "1 of 1 paths below the export name a patient" in console
    assert "DICOM headers" in console and str(beside) in console  # said where they are written
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["index_report.csv",
                                                                    "manifest.csv"]
    (manifest_row,) = _rows(tmp_path / "out" / "manifest.csv")
    linked = (tmp_path / "out" / manifest_row["anterior"]).resolve()
    assert linked.parent == beside.resolve() and linked.name.startswith("BA-")
    assert "QZ" not in manifest_row["anterior"]


# Issue 27, item 6: links stay inside the export ---------------------------------------------


def test_links_leading_outside_the_export_are_reported_not_followed(tmp_path):
    from tests.nm_files import nm_dataset, write

    export, outside = tmp_path / "export", tmp_path / "elsewhere"
    write(nm_dataset("AB-0001"), export / "IM1")
    write(nm_dataset("AB-0002"), outside / "deep" / "IM2")
    (export / "to_folder").symlink_to(outside)
    (export / "to_file").symlink_to(outside / "deep" / "IM2")
    (export / "inside").symlink_to(export / "IM1")  # inside: followed (a duplicate of IM1)
    # A scan behind a link not followed is left out: exit 1 (issue 33, item 2).
    rows, report = run(export, tmp_path / "out", code=1)
    assert set(report) == {"IM1", "to_folder", "to_file", "inside"}
    assert report["to_folder"]["status"] == report["to_file"]["status"] == "outside_export"
    assert "--follow-links-outside" in report["to_folder"]["reason"]
    assert report["inside"]["status"] == "duplicate" and len(rows) == 1
    rows, report = run(export, tmp_path / "out2", "--follow-links-outside", code=0)
    assert "to_folder/deep/IM2" in report and len(rows) == 2


def test_a_link_to_the_output_folder_is_not_indexed(tmp_path):
    from tests.nm_files import nm_dataset, write

    export, out = tmp_path / "export", tmp_path / "out"
    write(nm_dataset("AB-0001"), export / "IM1")
    run(export, out, code=0)
    (export / "old_run").symlink_to(out)
    rows, report = run(export, out, "--follow-links-outside", code=0)
    assert len(rows) == 1
    assert not any(f.startswith("old_run/") for f in report)  # never walked into
    assert report["old_run"]["status"] == "own_output"


def test_a_key_reachable_through_a_link_in_the_export_is_refused(tmp_path, capsys):
    from tests.nm_files import nm_dataset, write

    export, secret = tmp_path / "export", tmp_path / "secret"
    write(nm_dataset("AB-0001"), export / "IM1")
    secret.mkdir()
    (export / "keys").symlink_to(secret)
    rc = main([str(export), "--out", str(tmp_path / "out" / "manifest.csv"),
               "--key-file", str(secret / "key")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "reachable through a symbolic link" in err[0]
    assert not (tmp_path / "out" / "manifest.csv").exists()


def test_an_empty_view_code_item_leaves_the_text_headers_in_charge(tmp_path):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.nm_files import nm_dataset, write

    ant = nm_dataset(views=("anterior",))
    uid = ant.StudyInstanceUID
    post = nm_dataset(views=("posterior",), study_uid=uid, seed=3)
    for ds in (ant, post):  # "WB ANT" / "WB POST" in Series Description, an empty code item
        ds.ViewCodeSequence = Sequence([Dataset()])
        ds.DetectorInformationSequence[0].ViewCodeSequence = Sequence([Dataset()])
    write(ant, tmp_path / "export" / "a")
    write(post, tmp_path / "export" / "b")
    rows, report = run(tmp_path / "export", tmp_path / "out", code=0)
    assert len(rows) == 1 and report["a"]["view"] == "anterior"


@pytest.mark.parametrize("views", [
    ["ant/..=anterior"], [".=anterior"], ["=anterior"], ["EXPORT=anterior"], ["EXPORT/=anterior"],
    ["../outside=anterior"], ["EXPORT/../outside=anterior"], ["ant/../..=anterior"],
    [" =anterior"], ["ant/../post=anterior", "post=posterior"],
    ["post=posterior", "./ant/../post/=anterior"], ["EXPORT/ant=anterior", "ant/=posterior"],
])
def test_a_view_folder_is_one_folder_below_the_export_or_refused(tmp_path, capsys, views):
    """Issue 37, item 8: every spelling of a FOLDER is normalised to one key (two views for one
    folder are refused, none dropped); the export itself or a place outside it is refused, never
    taken as the whole export."""
    export = tmp_path / "export"
    for name in ("ant", "post"):
        (export / name).mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    args = [a for v in views for a in ("--view", v.replace("EXPORT", str(export)))]
    rc = main([str(export), "--out", str(tmp_path / "o" / "m.csv"), "--key-file",
               str(tmp_path / "k" / "k"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bone-age index: --view"), err
    assert ("given two views" if len(views) == 2 else "is not a folder below") in err[0], err
    assert not (tmp_path / "o").exists()


def test_spellings_of_a_view_folder_name_the_same_folder(tmp_path):
    from bone_age.index import _stated_views

    export = tmp_path / "export"
    (export / "a" / "b").mkdir(parents=True)
    spellings = ["a/b=anterior", "./a/b/=anterior", "a/../a/b=anterior", f"{export}/a/b=anterior",
                 f"{export}/a/./b/=anterior"]
    for text in spellings:
        assert _stated_views([text], export) == {"a/b": "anterior"}, text
    assert _stated_views(spellings + ["posterior"], export) == {"a/b": "anterior",
                                                                "": "posterior"}


def test_anatomy_decisions_are_counted_and_shown_on_a_contact_sheet(phantom, tmp_path, capsys):
    """Issue 32, item 2: when the anatomy decided a view, the summary says for how many studies
    and names a contact sheet beside the manifest: one PNG, each such study's two views side by
    side, labelled with its pseudonym only (no name, ID, date or path in it). A later run that
    decides nothing from the anatomy leaves no stale sheet behind."""
    from PIL import Image

    export, truth = phantom
    out = tmp_path / "out"
    rows, _ = run(export, out, code=0)
    text = capsys.readouterr().out
    sheet = out / "manifest.anatomy_views.png"  # named after the manifest
    assert sheet.is_file()
    assert "4 studies with a view decided from the anatomy" in text and str(sheet) in text
    img = Image.open(sheet)
    assert img.format == "PNG" and img.width >= 4 * 2 * 56 and img.height >= 224
    # Nothing identifying in the file: its text chunks and its bytes name no patient.
    ds = pydicom.dcmread(next(iter(export.iterdir())))
    raw = sheet.read_bytes()
    for value in (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.StudyDate,
                  str(export)):
        assert value.encode() not in raw
    assert not img.info.get("Comment") and all(k in ("dpi",) for k in img.info)
    # The same export with its views stated: nothing from the anatomy, no sheet, no line.
    split = tmp_path / "split"
    for name, view in truth.items():
        (split / view[:3]).mkdir(parents=True, exist_ok=True)
        shutil.copy(export / name, split / view[:3] / name)
    run(split, out, "--view", "ant=anterior", "--view", "pos=posterior", code=0)
    assert "decided from the anatomy" not in capsys.readouterr().out
    assert not sheet.exists()
