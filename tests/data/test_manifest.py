"""Manifests that are not UTF-8 CSV, or malformed, give one line naming file, line and column."""

from __future__ import annotations

import codecs

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bone_age.data.manifest import REQUIRED_COLUMNS, ManifestError, read_manifest

HEADER = ",".join(REQUIRED_COLUMNS)


@pytest.fixture
def scans(tmp_path):
    """Two (empty) files for the view columns: the manifest only checks that they exist."""
    for name in ("a.dcm", "b.dcm"):
        (tmp_path / name).write_bytes(b"")
    return tmp_path


def _write(folder, data: bytes):
    path = folder / "manifest.csv"
    path.write_bytes(data)
    return path


def _rows(*rows: str) -> str:
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_spreadsheet_encodings_name_line_byte_and_fix(scans, encoding):
    text = _rows("S1,61,F,a.dcm,b.dcm", "Zoë,62,M,a.dcm,b.dcm")
    path = _write(scans, text.encode(encoding))
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 3, byte 3: byte 0xeb is not UTF-8")
    assert "save the manifest as UTF-8" in message and "\n" not in message


@pytest.mark.parametrize("data, said", [
    (_rows("S1,61,F,a.dcm,b.dcm").encode("utf-16"), "UTF-16"),
    (_rows("S1,61,F,a.dcm,b.dcm").encode("utf-16-be"), "NUL byte"),
    (_rows("S1,61,F,a.dcm,b.dcm").encode("utf-32"), "UTF-32"),
    (bytes(range(256)) * 4, "NUL byte"),
    (b"", "empty manifest"),
    (b"\n\r\n\n", "empty manifest"),
    (HEADER.encode() + b"\n", "no rows below the header"),
    (b"subject_id,age,sex,age,anterior,posterior\n", "line 1: column 'age' appears 2 times"),
    (b"subject_id,Age,sex,anterior,posterior\n", "line 1: missing column(s) age (found"),
])
def test_unusable_files_are_one_line_errors(scans, data, said):
    path = _write(scans, data)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}: ") and said in str(err.value)
    assert "\n" not in str(err.value)


def test_utf8_with_bom_and_padded_header_is_read(scans):
    text = " subject_id , age,sex,anterior,posterior\r\nS1,61,F,a.dcm,b.dcm\r\n"
    studies, problems = read_manifest(_write(scans, codecs.BOM_UTF8 + text.encode()))
    assert problems == [] and [(s.subject_id, s.age, s.sex) for s in studies] == [("S1", 61, "F")]


def test_row_problems_name_line_and_column(scans):
    path = _write(scans, _rows(
        "S1,6o,F,a.dcm,b.dcm",            # line 2: age not a number
        'S2,61,F,"a.dcm",b.dcm',          # line 3: fine
        "S3,61,Q,a.dcm,b.dcm",            # line 4: unknown sex code
        "S4,61,F,a.dcm,b.dcm,x,y",        # line 5: an unquoted comma shifted the row
        "S5,61",                          # line 6: a cut row
        '"S6\nstill S6",61,F,a.dcm,b.dcm',  # lines 7-8: a quoted field over two lines
        "S7,61,F,a.dcm,nope.dcm",         # line 9: missing file
        ",61,F,a.dcm,b.dcm",              # line 10: no subject_id
    ).encode())
    studies, problems = read_manifest(path)
    assert [s.subject_id for s in studies] == ["S2", "S6\nstill S6"]
    assert studies[1].row == 7
    found = {p.row: str(p) for p in problems}
    assert set(found) == {2, 4, 5, 6, 9, 10}
    assert "column age: '6o' is not a number" in found[2]
    assert "column sex: unknown code 'Q'" in found[4]
    assert "7 fields but the header has 5" in found[5] and "6 fields" not in found[6]
    assert "2 fields but the header has 5" in found[6]
    assert "column posterior: file nope.dcm does not exist" in found[9]
    assert "column subject_id: empty" in found[10]
    assert all(text.startswith(f"{path}, row {row} ") for row, text in found.items())


def test_empty_sex_is_a_problem_only_where_sex_is_required(scans):
    path = _write(scans, _rows("S1,61,,a.dcm,b.dcm", "S2,62,M,a.dcm,b.dcm").encode())
    studies, problems = read_manifest(path)
    assert [s.subject_id for s in studies] == ["S2"]
    assert [(p.status, p.row) for p in problems] == [("bad_sex", 2)]
    assert "column sex: empty" in str(problems[0])
    studies, problems = read_manifest(path, sex_required=False)
    assert problems == [] and [s.sex for s in studies] == ["", "M"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(body=st.one_of(st.binary(max_size=300),
                      st.text(max_size=200).map(lambda t: (HEADER + "\n" + t).encode()),
                      st.text(max_size=200).map(lambda t: t.encode("utf-16"))))
def test_any_bytes_give_rows_or_one_manifest_error(scans, body):
    path = _write(scans, body)
    try:
        studies, problems = read_manifest(path)
    except ManifestError as err:
        assert "\n" not in str(err) and str(err).startswith(str(path))
        return
    assert all(p.row >= 2 for p in problems) and all(s.row >= 2 for s in studies)


@pytest.mark.parametrize("row, line, column, start", [
    ("S1,61,F,a.dcm,b.dcm,SITE-1\n=HYPERLINK(\"x\"),62,M,a.dcm,b.dcm,SITE-1", 3, "subject_id",
     "'='"),
    ("+1+cmd|' /C calc'!A0,61,F,a.dcm,b.dcm,SITE-1", 2, "subject_id", "'+'"),
    ("-2+3,61,F,a.dcm,b.dcm,SITE-1", 2, "subject_id", "'-'"),
    ("S1,61,F,a.dcm,b.dcm, @SUM(A1)", 2, "site", "'@'"),
])
def test_a_pseudonym_a_spreadsheet_would_run_is_refused(scans, row, line, column, start):
    text = "\n".join([HEADER + ",site", row]) + "\n"
    path = _write(scans, text.encode())
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line {line}, column {column}: the value starts with "
                              f"{start}, which a spreadsheet runs as a formula")
    assert "\n" not in message and "HYPERLINK" not in message and "calc" not in message


def test_hyphens_inside_and_numbers_are_plain_pseudonyms(scans):
    text = "\n".join([HEADER + ",site", "S-1,61,F,a.dcm,b.dcm,site-a", "-5,62,M,a.dcm,b.dcm,"])
    studies, problems = read_manifest(_write(scans, (text + "\n").encode()))
    assert problems == [] and [s.subject_id for s in studies] == ["S-1", "-5"]


def test_a_view_path_that_is_not_a_regular_file_says_what_it_is(scans):
    """Issue 37, item 10: /dev/zero or a FIFO exists: refused as what it is, not as missing."""
    import os

    os.mkfifo(scans / "fifo.dcm")
    (scans / "folder.dcm").mkdir()
    path = _write(scans, _rows("S1,61,F,/dev/zero,b.dcm", "S2,62,F,fifo.dcm,b.dcm",
                               "S3,63,M,a.dcm,folder.dcm", "S4,64,M,a.dcm,gone.dcm").encode())
    studies, problems = read_manifest(path)
    assert studies == []
    reasons = [p.reason for p in problems]
    assert "column anterior: file /dev/zero is not a regular file (a character device)" in \
        reasons[0]
    assert "column anterior: file fifo.dcm is not a regular file (a FIFO)" in reasons[1]
    assert "column posterior: file folder.dcm is a folder, not a file" in reasons[2]
    assert "column posterior: file gone.dcm does not exist" in reasons[3]
