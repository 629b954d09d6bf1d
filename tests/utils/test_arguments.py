"""Numbers on the command lines: NaN, infinities and reversed ranges are refused in one line."""

from __future__ import annotations

import argparse

import pytest

from bone_age.utils.arguments import finite_float, non_negative_float


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "x"])
def test_numbers_must_be_finite(text):
    for kind in (finite_float, non_negative_float):
        with pytest.raises(argparse.ArgumentTypeError):
            kind(text)
    assert non_negative_float("0.5") == 0.5 and finite_float("-2") == -2


def test_phantom_refuses_an_infinite_variability(tmp_path, capsys):
    from bone_age.phantom.__main__ import main as phantom

    assert phantom(["--out", str(tmp_path / "c"), "--subjects", "1", "--variability",
                    "inf"]) == 2
    assert not (tmp_path / "c").exists()
    assert "must be a finite number, got inf" in capsys.readouterr().err


@pytest.mark.parametrize("ages", [["80", "40"], ["40", "40"], ["-5", "40"], ["40", "500"]])
def test_index_refuses_an_age_range_that_is_not_min_below_max(tmp_path, capsys, ages):
    from bone_age import index

    (tmp_path / "dicom").mkdir()
    out = tmp_path / "out" / "manifest.csv"
    key = f"--key-file={tmp_path / 'secret' / 'k.key'}"
    assert index.main([str(tmp_path / "dicom"), "--out", str(out), key,
                       "--age-range", *ages]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "bone-age index: --age-range" in err
    assert "0 <= MIN < MAX <= 150" in err and not out.parent.exists()


def test_index_refuses_nan_ages(tmp_path, capsys):
    from bone_age import index

    (tmp_path / "dicom").mkdir()
    assert index.main([str(tmp_path / "dicom"), "--age-range", "nan", "nan"]) == 2
    assert "must be a finite number" in capsys.readouterr().err
