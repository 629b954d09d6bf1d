"""End to end: every model x loss cell on tiny settings, and a tiny Table 1 sweep."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

import pytest

from tests.conftest import read_rows, run_in_process, tiny_overrides

MODELS = ["vgg16", "resnet50", "inception", "multi_vgg16"]
LOSSES = ["mse", "softmax", "mv"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("loss", LOSSES)
def test_every_table1_cell_runs_end_to_end(model, loss, cohort, tmp_path):
    out = tmp_path / "run"
    metrics = run_in_process([f"model={model}", f"loss={loss}",
                              *tiny_overrides(cohort, tmp_path)], out)
    assert metrics["model"] == model and metrics["loss"] == loss
    assert metrics["n_train"] + metrics["n_val"] + metrics["n_test"] == 40
    for key in ("mae", "mae_sd", "pearson_r", "baseline_mae", "num_params", "best_epoch",
                "train_seconds", "fold"):
        assert key in metrics
    # The run's phases, timed: set-up to the first step, the evaluation pass, the result files.
    for key in ("setup_seconds", "evaluation_seconds", "results_seconds"):
        assert 0 < metrics[key] < metrics["setup_seconds"] + metrics["train_seconds"] + 60, key
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mae"] == pytest.approx(metrics["mae"])
    # A phantom cohort's yardsticks travel with the run (the closing summary prints them).
    info = json.loads((cohort.parent / "phantom_info.json").read_text())
    assert saved["phantom_floor_mae"] == info["bayes_mae_floor"]
    assert saved["phantom_oracle_mae"] == info["oracle_mae"]
    with (out / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == metrics["n_test"]
    assert set(rows[0]) == {"subject_id", "fold", "sex", "age", "pred_age", "pred_sd"}
    assert all((r["pred_sd"] == "") == (loss == "mse") for r in rows)
    assert (out / "scatter.png").stat().st_size > 1000
    # The cohort's fold assignment, for data.folds_file= of a later run.
    assert len(read_rows(out / "folds.csv")) == 40


def test_multirun_sweep_writes_table1(cohort, tmp_path):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "bone_age.run", "-m", "model=vgg16,multi_vgg16", "loss=mv",
           "data.fold=0,1", *tiny_overrides(cohort, tmp_path), f"hydra.sweep.dir={sweep}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # The sweep says its size before the first run, each run its place and the time left.
    out = done.stdout + done.stderr
    assert f"sweep: 4 runs into {sweep}" in out
    assert "run 1 of 4 (model=vgg16 loss=mv data.fold=0" in out
    assert re.search(r"run 4 of 4 \(model=multi_vgg16 loss=mv data.fold=1 .*\); 3 finished, "
                     r"~[\d a-z]+ left", out)
    table = (sweep / "table1.md").read_text()
    assert "| VGG16 [test_resnet] | Softmax + Mean-Variance loss |" in table
    assert "| Multiple inputs VGG16 [test_resnet] | Softmax + Mean-Variance loss |" in table
    assert "Not one experiment" not in table  # one sweep: its runs differ in model and fold only
    with (sweep / "table1.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["folds"]) for r in rows] == [2, 2]
    # Pooled over two folds: every pooled subject was tested exactly once.
    assert all(int(r["n"]) == sum(
        json.loads(p.read_text())["n_test"] for p in sweep.glob(f"[0-9]_{m}_mv_fold*/metrics.json"))
        for r, m in zip(rows, ["vgg16", "multi_vgg16"], strict=True))


def test_bad_config_is_one_clear_line(cohort, tmp_path):
    cmd = [sys.executable, "-m", "bone_age.run", *tiny_overrides(cohort, tmp_path),
           "data.fold=7", f"hydra.run.dir={tmp_path / 'bad'}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "data.fold must be in 0..4, got 7" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_channels_last_switch_trains(cohort, tmp_path):
    metrics = run_in_process(["speed.channels_last=true", *tiny_overrides(cohort, tmp_path)],
                             tmp_path / "run")
    assert metrics["n_test"] > 0 and metrics["mae"] == metrics["mae"]  # finite, not NaN


def test_report_gives_variants_their_own_rows(tmp_path):
    from bone_age.evaluation.table1 import report

    for name, extra in (("base", {}), ("sex", {"use_sex": True}), ("pad", {"resize": "pad"})):
        run_dir = tmp_path / name
        run_dir.mkdir()
        metrics = {"model": "multi_vgg16", "backbone": "vgg16", "loss": "mv", "fold": 0,
                   "baseline_mae": 7.0, **extra}
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
        (run_dir / "predictions.csv").write_text(
            "subject_id,fold,sex,age,pred_age,pred_sd\nA,0,F,50,52,3\nB,0,M,70,66,3\n")
    table = report(tmp_path).read_text()
    for row in ("| Multiple inputs VGG16 | ", "| Multiple inputs VGG16 + sex | ",
                "| Multiple inputs VGG16 + 4:1 aspect | "):
        assert row in table


def test_the_precision_that_ran_is_recorded(cohort, tmp_path, monkeypatch):
    """bf16 asked on a CPU without native bf16 runs in float32, and says so everywhere."""
    from bone_age.training import precision

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    out = tmp_path / "run"
    run_in_process([*tiny_overrides(cohort, tmp_path), "model=vgg16", "loss=mse",
                    "trainer.precision=bf16-mixed"], out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["settings"]["trainer.precision"] == "32-true"
    (logged,) = out.rglob("hparams.yaml")  # what the loggers were given
    assert "precision: 32-true" in logged.read_text()
