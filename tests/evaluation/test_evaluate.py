"""python -m bone_age.evaluate: a trained model's test-fold figures on any cohort.

The target: evaluating a run's checkpoint on exactly the subjects of its test fold reproduces
the run's metrics.json (every figure both hold) to 1e-6.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bone_age.evaluation.evaluate import main
from bone_age.inference.checkpoint import read_checkpoint
from tests.conftest import cohort_rows, read_rows, run_in_process, tiny_overrides, write_rows

# Figures a run's metrics.json and an evaluation's must share (mv loss, calibration fitted).
SHARED = {"mae", "mae_sd", "pearson_r", "train_mean_age", "baseline_mae", "gap_mean",
          "gap_r_age", "gap_corrected_mean", "gap_corrected_r_age", "gap_corrected_mae",
          "calib_cov50", "calib_cov90", "calib_cov50_q", "calib_cov90_q", "calib_mean_sd",
          "temperature", "calib_cov50_T", "calib_cov90_T", "calib_mean_sd_T", "mae_T"}
FIGURES = ("scatter.png", "bland_altman.png", "error_by_group.png", "reliability.png")


def write_manifest(source: Path, out: Path, keep=None, blank_age=()) -> Path:
    """``source``'s rows (those whose subject_id is in ``keep``), with absolute view paths and
    the ages of ``blank_age`` emptied."""
    rows = [r for r in cohort_rows(source) if keep is None or r["subject_id"] in keep]
    for r in rows:
        if r["subject_id"] in blank_age:
            r["age"] = ""
    return write_rows(out, rows)


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory) -> Path:
    """A tiny dual-view mean-variance run (two epochs: best and last may differ)."""
    tmp = tmp_path_factory.mktemp("evaluate")
    run = tmp / "run"
    run_in_process([*tiny_overrides(cohort, tmp), "model=multi_vgg16", "loss=mv",
                    "trainer.max_epochs=2"], run)
    return run


def _tested_checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("epoch*.ckpt"))


def _test_fold(cohort: Path, run: Path, out: Path) -> Path:
    ids = {r["subject_id"] for r in read_rows(run / "predictions.csv")}
    return write_manifest(cohort, out, keep=ids)


def _compare(run: Path, out: Path, tolerance: float) -> dict:
    ran = json.loads((run / "metrics.json").read_text())
    got = json.loads((out / "metrics.json").read_text())
    assert set(ran) & set(got) >= SHARED
    worst = {k: abs(ran[k] - got[k]) for k in SHARED}
    assert max(worst.values()) <= tolerance, worst
    assert got["n"] == ran["n_test"] == got["n_predicted"]
    return got


def test_evaluate_on_the_test_fold_reproduces_the_run(cohort, trained, tmp_path, capsys):
    ckpt = _tested_checkpoint(trained)
    fold = _test_fold(cohort, trained, tmp_path / "fold" / "manifest.csv")
    out = tmp_path / "eval"
    assert main([str(ckpt), str(fold), "--out", str(out)]) == 0
    got = _compare(trained, out, 1e-6)
    assert got["kind"] == "evaluation" and got["not_computed"] == []
    for name in FIGURES:
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
    # Every prediction as the run wrote it, subject by subject.
    ran = {r["subject_id"]: float(r["pred_age"]) for r in read_rows(trained / "predictions.csv")}
    evaluated = {r["subject_id"]: float(r["pred_age"]) for r in read_rows(out / "predictions.csv")}
    assert evaluated.keys() == ran.keys()
    assert max(abs(evaluated[s] - ran[s]) for s in ran) <= 1e-6
    # The calibration the checkpoint carries is the one the run fitted.
    fitted = json.loads((trained / "calibration.json").read_text())
    record = read_checkpoint(ckpt)["bone_age"]
    assert record["version"] == 3
    assert record["calibration"]["gap_correction"] == fitted["gap_correction"]
    assert record["calibration"]["temperature"] == fitted["temperature"]
    printed = capsys.readouterr().out
    assert f"evaluated {got['n']} of {got['n']} predicted studies" in printed
    assert f"MAE {got['mae']:.2f}" in printed
    assert "calib_cov90_T" in got  # an mv run: each figure named for what it is
    assert (f"90% interval coverage {got['calib_cov90']:.2f}; {got['calib_cov90_T']:.2f} "
            f"after temperature scaling (T = {got['temperature']:.2f})") in printed


def test_only_checkpoints_of_the_tested_weights_carry_the_calibration(trained):
    tested = read_checkpoint(_tested_checkpoint(trained))
    last = read_checkpoint(trained / "checkpoints" / "last.ckpt")
    same = all(torch.equal(tested["state_dict"][k], last["state_dict"][k])
               for k in tested["state_dict"])
    assert "calibration" in tested["bone_age"]
    assert ("calibration" in last["bone_age"]) == same


def test_evaluate_runs_an_exported_onnx_model(cohort, trained, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from bone_age.inference.export import export

    model = export(_tested_checkpoint(trained), tmp_path / "model.onnx")
    fold = _test_fold(cohort, trained, tmp_path / "fold" / "manifest.csv")
    out = tmp_path / "eval"
    assert main([str(model), str(fold), "--out", str(out)]) == 0
    # onnxruntime's float32 kernels round differently from PyTorch's, within a few 1e-5.
    got = _compare(trained, out, 1e-3)
    assert got["not_computed"] == []


def test_studies_without_an_age_are_predicted_not_scored(cohort, trained, tmp_path):
    everyone = [r["subject_id"] for r in read_rows(cohort)]
    manifest = write_manifest(cohort, tmp_path / "c" / "manifest.csv",
                              blank_age=set(everyone[:3]))
    out = tmp_path / "eval"
    assert main([str(_tested_checkpoint(trained)), str(manifest), "--out", str(out)]) == 0
    got = json.loads((out / "metrics.json").read_text())
    rows = read_rows(out / "predictions.csv")
    assert len(rows) == got["n_predicted"] == len(everyone)
    assert got["n_no_age"] == 3 and sum(r["age"] == "" for r in rows) == 3
    assert got["n"] + got["n_no_age"] + got["n_outside_age_range"] == len(everyone)
    assert len(read_rows(out / "age_gap.csv")) == got["n"]


def _old_checkpoint(ckpt: Path, out: Path) -> Path:
    """The checkpoint as a bone-age before run-metadata version 3 wrote it."""
    data = read_checkpoint(ckpt)
    record = data["bone_age"]
    record.pop("calibration")
    record["training_data"].pop("train_mean_age")
    record["version"] = 2
    torch.save(data, out)
    return out


def test_an_old_checkpoint_says_what_it_cannot_give(cohort, trained, tmp_path, capsys):
    old = _old_checkpoint(_tested_checkpoint(trained), tmp_path / "old.ckpt")
    fold = _test_fold(cohort, trained, tmp_path / "fold" / "manifest.csv")
    out = tmp_path / "eval"
    assert main([str(old), str(fold), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "not computed" in line]
    assert len(lines) == 3
    assert any("baseline MAE" in line for line in lines)
    assert any("bias-corrected age gap" in line for line in lines)
    assert any("temperature" in line for line in lines)
    assert "Traceback" not in err
    got = json.loads((out / "metrics.json").read_text())
    assert "baseline_mae" not in got and "temperature" not in got
    ran = json.loads((trained / "metrics.json").read_text())
    assert abs(got["mae"] - ran["mae"]) <= 1e-6 and abs(got["calib_cov90"] - ran["calib_cov90"]) \
        <= 1e-6  # what needs nothing fitted is still computed


def test_nothing_to_score_is_one_line_and_writes_nothing(cohort, trained, tmp_path, capsys):
    everyone = {r["subject_id"] for r in read_rows(cohort)}
    manifest = write_manifest(cohort, tmp_path / "c" / "manifest.csv", blank_age=everyone)
    out = tmp_path / "eval"
    assert main([str(_tested_checkpoint(trained)), str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to score" in err[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".eval")]  # no temp left


def test_refuses_a_folder_holding_other_files(cohort, trained, tmp_path, capsys):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main([str(_tested_checkpoint(trained)), str(cohort), "--out", str(out)]) == 2
    assert "holds other files (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_a_rerun_replaces_an_earlier_evaluation(cohort, trained, tmp_path):
    out = tmp_path / "eval"
    ckpt = _tested_checkpoint(trained)
    assert main([str(ckpt), str(cohort), "--out", str(out)]) == 0
    stale = out / "reliability.png"
    shutil.copy(out / "scatter.png", stale)
    mse_run = tmp_path / "mse"
    run_in_process([*tiny_overrides(cohort, tmp_path), "model=vgg16", "loss=mse"], mse_run)
    assert main([str(_tested_checkpoint(mse_run)), str(cohort), "--out", str(out)]) == 0
    assert not stale.exists()  # an MSE model has no intervals: no reliability plot left over


def test_the_folder_around_the_evaluation_is_never_cleaned(cohort, trained, tmp_path):
    """``--out HOME/eval``: HOME's files are the user's, whatever their names (issue 37)."""
    import subprocess

    from bone_age.utils import outputs

    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(["true"])
    proc.wait()
    names = [".thesis.docx.2024.tmp", f".photos.{outputs._HOST}-{proc.pid}-1.tmp",
             f".eval.{outputs.TEMP_MARK}.{outputs._HOST}-{proc.pid}-0"]
    for name in names:
        (home / name).write_text("a user's file")
    (home / ".archive.2019.tmp").mkdir()
    (home / ".archive.2019.tmp" / "x").write_text("a user's file")
    assert main([str(_tested_checkpoint(trained)), str(cohort), "--out", str(home / "eval")]) == 0
    assert sorted(p.name for p in home.iterdir()) == sorted([*names, ".archive.2019.tmp", "eval"])
    assert (home / ".archive.2019.tmp" / "x").is_file()


def test_an_evaluation_never_goes_into_the_folder_of_its_scan(tmp_path, capsys):
    """Issue 37, item 7: one DICOM file's folder is an input folder (before any work)."""
    scan = tmp_path / "scans" / "scan.dcm"
    scan.parent.mkdir()
    scan.write_bytes(b"DICM")
    for out in (scan.parent, scan.parent / "eval"):
        assert main([str(tmp_path / "m.ckpt"), str(scan), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "inside the folder of an input DICOM file" in err[0], err
    assert list(scan.parent.iterdir()) == [scan]
