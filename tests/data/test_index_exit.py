"""Issue 33, items 2 and 9: index exits 1 when any study was left out (the rule of every
command), not only when none was written; a file that holds no study leaves nothing out; the
slow part (views from the anatomy, pixel checks) shows progress."""

from __future__ import annotations

import csv
from pathlib import Path

import bone_age.data.index_studies as index_studies
from bone_age.index import main
from tests.nm_files import nm_dataset, write


def run(export: Path, out: Path) -> tuple[int, list[dict]]:
    rc = main([str(export), "--out", str(out / "manifest.csv"),
               "--key-file", str(out.parent / "secret" / "key")])
    with (out / "manifest.csv").open(newline="") as f:
        return rc, list(csv.DictReader(f))


def test_a_study_left_out_beside_written_ones_exits_1(tmp_path, capsys):
    export = tmp_path / "export"
    write(nm_dataset("AB-0001"), export / "a" / "IM1")
    write(nm_dataset("AB-0002"), export / "b" / "IM1")
    write(nm_dataset("AB-0003", views=("anterior",)), export / "c" / "IM1")  # incomplete
    rc, rows = run(export, tmp_path / "out")
    assert rc == 1 and len(rows) == 2
    assert "1 study left out" in capsys.readouterr().out


def test_a_study_whose_files_all_failed_alone_exits_1(tmp_path, capsys):
    """A study never assembled (its only file failed on its own: view_unknown) is left out."""
    export = tmp_path / "export"
    write(nm_dataset("AB-0001"), export / "IM1")
    ds = nm_dataset("AB-0002", views=("anterior", "posterior", "anterior"))
    for item in ds.DetectorInformationSequence:
        del item.ViewCodeSequence
    del ds.SeriesDescription
    write(ds, export / "IM2")  # three frames, no view named: cannot be told apart
    rc, rows = run(export, tmp_path / "out")
    assert rc == 1 and len(rows) == 1
    assert "1 study left out" in capsys.readouterr().out


def test_files_that_hold_no_study_leave_nothing_out(tmp_path):
    export = tmp_path / "export"
    write(nm_dataset("AB-0001"), export / "IM1")
    (export / "README.txt").write_text("export of 2024\n")
    ds = nm_dataset("AB-0001")
    ds.Modality = "CT"
    write(ds, export / "CT1")
    rc, rows = run(export, tmp_path / "out")
    assert rc == 0 and len(rows) == 1


def test_assembling_studies_shows_progress(tmp_path, monkeypatch):
    shown = []

    def recording(iterable, **kwargs):
        shown.append(kwargs)
        return iterable

    monkeypatch.setattr(index_studies, "progress_display", recording)
    monkeypatch.setattr(index_studies, "PROGRESS_FROM", 2)
    export = tmp_path / "export"
    for n in range(2):
        write(nm_dataset(f"AB-000{n}"), export / f"IM{n}")
    assert run(export, tmp_path / "out")[0] == 0
    assert [k["enabled"] for k in shown] == [True] and shown[0]["total"] == 2


def test_the_link_file_is_named_when_written(tmp_path, capsys):
    """Issue 33, item 9: the file holding Patient IDs is never written without a word."""
    export = tmp_path / "export"
    write(nm_dataset("AB-0001"), export / "IM1")
    link = tmp_path / "owner" / "links.csv"
    assert main([str(export), "--out", str(tmp_path / "out" / "m.csv"), "--key-file",
                 str(tmp_path / "secret" / "key"), "--link-file", str(link)]) == 0
    said = [line for line in capsys.readouterr().out.splitlines() if str(link) in line]
    assert len(said) == 1 and "Patient ID" in said[0] and "1 subject," in said[0]
