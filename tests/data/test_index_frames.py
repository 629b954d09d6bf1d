"""Two-frame files whose headers name no view (issue 33, item 1): the index decides their
frames from the anatomy (the two frames of one study compared) or takes --frames, and writes
each frame as a file of its own view, which every reader of the manifest understands."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from bone_age.data.dicom import read_study_views
from bone_age.index import main
from bone_age.phantom import generate_cohort
from tests.data.test_index_views import strip_view


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run(export: Path, out: Path, *extra: str) -> tuple[int, list[dict], dict[str, dict]]:
    rc = main([str(export), "--out", str(out / "manifest.csv"),
               "--key-file", str(out.parent / "secret" / "key"), *extra])
    report = {r["file"]: r for r in _rows(out / "index_report.csv")}
    return rc, _rows(out / "manifest.csv"), report


@pytest.fixture(scope="module")
def two_frames(tmp_path_factory) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """3 phantom subjects as two-frame files (anterior first), view codes stripped; returns
    the export and each file's (anterior, posterior) counts."""
    src = tmp_path_factory.mktemp("ph2")
    generate_cohort(src, subjects=3, seed=5, progress=False, layout="two-frame")
    export = tmp_path_factory.mktemp("export2")
    truth = {}
    for n, path in enumerate(sorted((src / "dicom").glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        views = read_study_views({"anterior": path, "posterior": path})
        name = f"IM{n:04d}"
        strip_view(ds).save_as(export / name)
        truth[name] = (views["anterior"], views["posterior"])
    return export, truth


def _check_manifest(out: Path, rows: list[dict], truth: dict) -> None:
    """Each manifest row's views read back as the true anterior and posterior frames."""
    found = {r["study"] for r in rows}
    assert len(found) == len(truth)
    wanted = {tuple(map(float, (a.sum(), p.sum()))) for a, p in truth.values()}
    got = set()
    for r in rows:
        views = read_study_views({v: out / r[v] for v in ("anterior", "posterior")})
        got.add((float(views["anterior"].sum()), float(views["posterior"].sum())))
    assert got == wanted


def test_two_frame_files_without_view_codes_get_their_views_from_the_anatomy(two_frames,
                                                                             tmp_path):
    export, truth = two_frames
    rc, rows, report = run(export, tmp_path / "out")
    assert rc == 0 and len(rows) == 3, report
    for name in truth:
        r = report[name]
        assert (r["status"], r["view"], r["view_from"]) == ("ok", "anterior+posterior",
                                                             "anatomy"), r
    _check_manifest(tmp_path / "out", rows, truth)


def test_frames_option_states_the_order_and_a_wrong_order_is_taken_as_stated(two_frames,
                                                                             tmp_path):
    export, truth = two_frames
    rc, rows, report = run(export, tmp_path / "out", "--frames", "anterior,posterior")
    assert rc == 0 and {r["view_from"] for r in report.values()} == {"option"}
    _check_manifest(tmp_path / "out", rows, truth)
    # The user's word is taken: swapped, the manifest's anterior is the second frame.
    rc, rows, _ = run(export, tmp_path / "swapped", "--frames", "POSTERIOR, anterior")
    assert rc == 0
    _check_manifest(tmp_path / "swapped", rows,
                    {k: (p, a) for k, (a, p) in truth.items()})


def test_frames_option_by_folder(two_frames, tmp_path):
    export, truth = two_frames
    nested = tmp_path / "nested"
    (nested / "site3").mkdir(parents=True)
    for name in truth:
        (nested / "site3" / name).write_bytes((export / name).read_bytes())
    rc, rows, report = run(nested, tmp_path / "out", "--frames", "site3=anterior,posterior")
    assert rc == 0 and {r["view_from"] for r in report.values()} == {"option"}
    _check_manifest(tmp_path / "out", rows, truth)


def test_undecidable_two_frame_file_points_to_the_frames_option(two_frames, tmp_path):
    """Two identical frames: the anatomy cannot tell them apart; the reason says --frames."""
    export, truth = two_frames
    flat = tmp_path / "flat"
    flat.mkdir()
    ds = pydicom.dcmread(export / "IM0000")
    frames = ds.pixel_array
    ds.PixelData = np.stack([frames[0], frames[0]]).astype(frames.dtype).tobytes()
    ds.save_as(flat / "IM0000")
    rc, rows, report = run(flat, tmp_path / "out")
    r = report["IM0000"]
    assert rc == 1 and rows == []
    assert r["status"] == "view_unknown" and "--frames anterior,posterior" in r["reason"], r


@pytest.mark.parametrize("bad", ["anterior", "anterior,anterior", "ant,post",
                                 "nowhere=anterior,posterior"])
def test_bad_frames_option_is_one_line(two_frames, tmp_path, capsys, bad):
    export, _ = two_frames
    rc = main([str(export), "--out", str(tmp_path / "o" / "m.csv"), "--key-file",
               str(tmp_path / "k" / "k"), "--frames", bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("bone-age index: --frames"), err
