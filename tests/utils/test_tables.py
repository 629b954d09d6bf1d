"""CSV outputs: formula-like text cells neutralised (OWASP), numbers untouched, files whole."""

from __future__ import annotations

import csv

import numpy as np

from bone_age.evaluation.results import prediction_table, write_csv, write_gaps
from bone_age.evaluation.table1_files import write_table
from bone_age.utils.tables import csv_text, formula_like, safe_cell

FORMULAS = ["=1+1", "+cmd", "-1+2", "@SUM(A1)", "\tx", "\r=x", '=HYPERLINK("http://x")']


def test_formula_like_text_is_quoted_and_numbers_and_plain_text_are_not():
    assert [safe_cell(v) for v in FORMULAS] == ["'" + v for v in FORMULAS]
    plain = ["-3.25", "+1e3", "-inf", "nan", "12", "BA-12ab", "S-1", "", "a=b"]
    assert [safe_cell(v) for v in plain] == plain and not any(map(formula_like, plain))
    assert safe_cell(-3.5) == -3.5


def _cells(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_every_csv_output_neutralises_formulas(tmp_path):
    """predictions.csv, age_gap.csv and table1.csv of a cohort whose ids would run."""
    ids = FORMULAS[:4]
    n = len(ids)
    age, pred = np.array([50.0, 60, 70, 55]), np.array([52.0, 57.5, 71, 54])
    columns, rows = prediction_table(ids, ["F"] * n, list(age), pred, np.full(n, np.nan),
                                     extra={"site": ["@site", "=s", "ok", "-x"]})
    write_csv(tmp_path / "predictions.csv", columns, rows)
    preds = _cells(tmp_path / "predictions.csv")
    assert [r[0] for r in preds[1:]] == ["'" + i for i in ids]
    assert [r[1] for r in preds[1:]] == ["'@site", "'=s", "ok", "'-x"]
    gaps = {"pred_age": pred, "gap": pred - age}
    write_gaps(tmp_path / "age_gap.csv", ids, ["F"] * n, age, gaps)
    gap_rows = _cells(tmp_path / "age_gap.csv")[1:]
    assert [r[0] for r in gap_rows] == ["'" + i for i in ids]
    assert gap_rows[1][4] == "-2.5"  # a negative number stays a number
    row = {"model": "=evil", "loss": "mv", "settings": "", "mae": 1.0, "mae_sd": 0.5, "r": 0.9,
           "folds": 1, "n": 4, "fold_mae_mean": 1.0, "fold_mae_sd": 0.0, "fold_r_mean": 0.9,
           "fold_r_sd": 0.0, "baseline_mae": 2.0, "key": "k"}
    write_table([row], tmp_path)
    assert _cells(tmp_path / "table1.csv")[1][0] == "'=evil"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "age_gap.csv", "predictions.csv", "table1.csv", "table1.md"]  # no temporaries


def test_csv_text_takes_rows_as_sequences_or_mappings():
    assert csv_text(["a", "b"], [["=x", 1], {"a": "y", "b": "-z"}]) == "a,b\r\n'=x,1\r\ny,'-z\r\n"
