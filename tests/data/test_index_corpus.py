"""Index every file pydicom ships in its own test data: one row each, no traceback, sensible
statuses. Only the files present in the installed package are used: pydicom's
``get_testdata_files`` would also try to download its extra data set, so it is not called."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from pydicom.data.data_manager import DATA_ROOT

from bone_age.index import main

TEST_FILES = Path(DATA_ROOT) / "test_files"
# Statuses a non-NM or non-image file may get; never a written one.
NOT_WRITTEN_FOR_OTHERS = {"ok", "no_age", "age_out_of_range", "unknown_sex"}


def _local_files() -> list[Path]:
    return sorted(p for p in TEST_FILES.rglob("*") if p.is_file() and p.suffix != ".py")


@pytest.mark.skipif(not TEST_FILES.is_dir(), reason="pydicom's test files are not installed")
def test_every_pydicom_test_file_gets_one_sensible_row(tmp_path, capsys):
    files = _local_files()
    assert len(files) > 100
    export = tmp_path / "export"
    for src in files:
        dst = export / src.relative_to(TEST_FILES)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    code = main([str(export), "--out", str(tmp_path / "out" / "manifest.csv"),
                 "--key-file", str(tmp_path / "secret" / "key")])
    assert code in (0, 1)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    with (tmp_path / "out" / "index_report.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))  # a plain CSV: no note line before the header
    by_file = {r["file"]: r for r in rows}
    assert len(by_file) == len(rows) == len(files)
    assert set(by_file) == {p.relative_to(TEST_FILES).as_posix() for p in files}
    for file, row in by_file.items():
        assert row["status"] and row["reason"].startswith(f"{file}:"), row
        assert "\n" not in row["reason"] and len(row["reason"]) < 400, row
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    # The corpus is CT, MR, US, RT, SR and friends, DICOMDIRs and broken files: no NM study.
    assert not NOT_WRITTEN_FOR_OTHERS & set(counts), counts
    assert by_file["CT_small.dcm"]["status"] == "unsupported_modality"
    assert by_file["MR_small.dcm"]["status"] == "unsupported_modality"
    assert by_file["dicomdirtests/DICOMDIR"]["status"] == "dicomdir"
    assert by_file["SC_ybr_full_422_uncompressed.dcm"]["status"] == "unsupported_image"
    assert counts["unsupported_modality"] > 50 and counts.get("not_dicom", 0) > 0
