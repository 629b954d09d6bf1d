"""Results files and Table 1: every figure recomputable from the CSVs, pooling by settings."""

from __future__ import annotations

import csv
import json
import logging
import shutil

import numpy as np
import pytest
from scipy import stats

from bone_age.evaluation.metrics import exact
from bone_age.evaluation.table1 import report
from tests.conftest import cohort_rows, read_rows, run_in_process, tiny_overrides, write_rows

TOL = 1e-6


def _column(rows, key):
    return np.array([float(r[key]) for r in rows])


def _figures(age, pred):
    err = np.abs(pred - age)
    return {"mae": err.mean(), "mae_sd": err.std(ddof=1), "pearson_r": stats.pearsonr(pred, age)[0]}


@pytest.fixture(scope="module")
def fractional_ages(cohort, tmp_path_factory):
    """The session cohort with ages that float32 cannot hold exactly (51.123456789...)."""
    tmp = tmp_path_factory.mktemp("fractional")
    rows = cohort_rows(cohort)
    for i, r in enumerate(rows):
        r["age"] = repr(min(80.0, float(r["age"]) + 0.123456789 * (i % 7)))
    return write_rows(tmp / "manifest.csv", rows)


@pytest.fixture(scope="module")
def sweep(fractional_ages, tmp_path_factory):
    """Two folds of one tiny experiment, and fold 0 again at another image size."""
    tmp = tmp_path_factory.mktemp("sweep")
    base = ["model=vgg16", "loss=mv", *tiny_overrides(fractional_ages, tmp)]
    for fold in (0, 1):
        run_in_process([*base, f"data.fold={fold}"], tmp / "sweep" / f"fold{fold}")
    run_in_process([*base, "data.fold=0", "data.image_size=[16,8]"], tmp / "other" / "small")
    return tmp


def test_every_run_figure_recomputes_from_predictionsread_rows(sweep):
    for run in ("fold0", "fold1"):
        out = sweep / "sweep" / run
        metrics = json.loads((out / "metrics.json").read_text())
        rows = read_rows(out / "predictions.csv")
        age, pred = _column(rows, "age"), _column(rows, "pred_age")
        assert len(rows) == metrics["n_test"]
        assert not np.array_equal(age, age.astype(np.float32))  # float32 would lose these ages
        for key, value in _figures(age, pred).items():
            assert abs(metrics[key] - value) < TOL, key
        assert abs(metrics["baseline_mae"] - np.abs(age - metrics["train_mean_age"]).mean()) < TOL
        # The calibration callback's gap figures: from the same predictions and ages.
        assert abs(metrics["gap_mean"] - (pred - age).mean()) < TOL
        gaps = read_rows(out / "age_gap.csv")
        assert np.array_equal(_column(gaps, "age"), age)
        corrected = _column(gaps, "gap_corrected")
        assert abs(metrics["gap_corrected_mean"] - corrected.mean()) < TOL
        assert abs(metrics["gap_corrected_mae"] - np.abs(corrected).mean()) < TOL


def test_table1_recomputes_from_predictionsread_rows(sweep):
    assert report(sweep / "sweep") is not None
    (row,) = read_rows(sweep / "sweep" / "table1.csv")  # two folds of one experiment: one row
    assert row["settings"] == "" and int(row["folds"]) == 2
    folds = [read_rows(sweep / "sweep" / f"fold{k}" / "predictions.csv") for k in (0, 1)]
    runs = [json.loads((sweep / "sweep" / f"fold{k}" / "metrics.json").read_text())
            for k in (0, 1)]
    age = np.concatenate([_column(f, "age") for f in folds])
    pred = np.concatenate([_column(f, "pred_age") for f in folds])
    pooled = _figures(age, pred)
    per_fold = [_figures(_column(f, "age"), _column(f, "pred_age")) for f in folds]
    expected = {
        "n": len(age), "mae": pooled["mae"], "mae_sd": pooled["mae_sd"], "r": pooled["pearson_r"],
        "fold_mae_mean": np.mean([f["mae"] for f in per_fold]),
        "fold_mae_sd": np.std([f["mae"] for f in per_fold], ddof=1),
        "fold_r_mean": np.mean([f["pearson_r"] for f in per_fold]),
        "fold_r_sd": np.std([f["pearson_r"] for f in per_fold], ddof=1),
        "baseline_mae": np.mean([np.abs(_column(f, "age") - m["train_mean_age"]).mean()
                                 for f, m in zip(folds, runs, strict=True)]),
    }
    for key, value in expected.items():
        assert abs(float(row[key]) - value) < TOL, key


def test_report_keeps_runs_of_other_settings_apart(sweep, caplog):
    mixed = sweep / "mixed"
    mixed.mkdir()
    for run in (sweep / "sweep" / "fold0", sweep / "sweep" / "fold1", sweep / "other" / "small"):
        shutil.copytree(run, mixed / f"{run.parent.name}_{run.name}")
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        table = report(mixed).read_text()
    rows = read_rows(mixed / "table1.csv")
    assert sorted(int(r["folds"]) for r in rows) == [1, 2]
    assert sorted(r["settings"] for r in rows) == ["data.image_size=[16, 8]",
                                                   "data.image_size=[32, 16]"]
    assert "runs differ in data.image_size;" in caplog.text  # only the key that differs
    assert "(data.image_size=[16, 8])" in table and "Not one experiment" in table


def _fake_run(folder, settings, fold, rng, loss="mv"):
    folder.mkdir(parents=True)
    age = rng.uniform(40, 80, 12)
    metrics = {"model": "vgg16", "backbone": "vgg16", "loss": loss, "fold": fold,
               "train_mean_age": 60.0, "baseline_mae": 0.0, "settings": settings}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with (folder / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"])
        w.writerows([f"S{fold}{i}", fold, "F", exact(a), exact(a + rng.normal(0, 3)), ""]
                    for i, a in enumerate(age))


@pytest.mark.parametrize("seeds", [(1, 1), (1, 2)])
def test_runs_pool_only_when_every_setting_matches(tmp_path, seeds, caplog):
    rng = np.random.default_rng(0)
    base = {"model.backbone": "vgg16", "model.views": 1, "loss.name": "mv",
            "data.image_size": [224, 224], "module.optimizer.lr": 1e-4}
    for seed in sorted(set(seeds)):
        for fold in range(3):
            _fake_run(tmp_path / f"seed{seed}_fold{fold}",
                      {**base, "seed": seed, "data.seed": seed}, fold, rng)
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        report(tmp_path)
    rows = read_rows(tmp_path / "table1.csv")
    if seeds[0] == seeds[1]:  # one consistent sweep: all folds in one row, no word said
        assert [int(r["folds"]) for r in rows] == [3] and rows[0]["settings"] == ""
        assert "differ" not in caplog.text
    else:
        assert [int(r["folds"]) for r in rows] == [3, 3]
        assert sorted(r["settings"] for r in rows) == ["seed=1", "seed=2"]
        assert "runs differ in seed;" in caplog.text
        assert caplog.text.count(" folds)") == 2  # a line per row


LOSS_SETTINGS = {"mse": {}, "softmax": {}, "mv": {"loss.lambda_mean": 0.2,
                                                  "loss.lambda_var": 0.05}}


@pytest.mark.parametrize("case", ["sweep", "two_mv_weights", "age_range"])
def test_a_losss_own_parameters_are_compared_within_that_loss(case, tmp_path, caplog):
    """loss=mse,softmax,mv is one experiment: the mean-variance weights, which only mv has, are
    no difference between the losses; two mv weightings, or another age range, are."""
    rng = np.random.default_rng(2)
    runs = [(loss, LOSS_SETTINGS[loss]) for loss in LOSS_SETTINGS]
    if case == "two_mv_weights":
        runs.append(("mv", {"loss.lambda_mean": 0.5, "loss.lambda_var": 0.05}))
    for i, (loss, own) in enumerate(runs):
        age_range = {"loss.min_age": 30 if case == "age_range" and loss == "mse" else 40,
                     "loss.max_age": 80}
        _fake_run(tmp_path / f"run{i}", {"seed": 1, "loss.name": loss, **age_range, **own}, 0,
                  rng, loss)
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        table = report(tmp_path).read_text()
    labels = {(r["loss"], r["settings"]) for r in read_rows(tmp_path / "table1.csv")}
    if case == "sweep":
        assert "Not one experiment" not in table and "differ" not in caplog.text
        assert {label for _, label in labels} == {""}
    elif case == "two_mv_weights":
        assert "runs differ in loss.lambda_mean;" in caplog.text
        assert ("Mean squared loss", "") in labels and ("Softmax loss", "") in labels
        assert ("Softmax + Mean-Variance loss", "loss.lambda_mean=0.5") in labels
    else:
        assert "runs differ in loss.min_age;" in caplog.text
        assert ("Mean squared loss", "loss.min_age=30") in labels


def test_settings_of_older_runs_come_from_hydra_config(tmp_path, caplog):
    """Runs without recorded settings: Hydra's .hydra/config.yaml beside them is compared."""
    rng = np.random.default_rng(1)
    for size in (224, 112):
        for fold in (0, 1):
            run = tmp_path / f"s{size}_f{fold}"
            _fake_run(run, None, fold, rng)
            metrics = json.loads((run / "metrics.json").read_text())
            del metrics["settings"]
            (run / "metrics.json").write_text(json.dumps(metrics))
            (run / ".hydra").mkdir()
            (run / ".hydra" / "config.yaml").write_text(
                f"seed: 3\ndata:\n  fold: {fold}\n  seed: ${{seed}}\n  image_size: [{size}, {size}]"
                f"\n  cache_dir: /somewhere/{fold}\npaths:\n  output_dir: ${{hydra:runtime.cwd}}\n"
                "callbacks:\n  early_stopping:\n    patience: 30\n  results:\n    x: 1\n")
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        report(tmp_path)
    rows = read_rows(tmp_path / "table1.csv")
    assert sorted(r["settings"] for r in rows) == ["data.image_size=[112, 112]",
                                                   "data.image_size=[224, 224]"]
    assert [int(r["folds"]) for r in rows] == [2, 2]
    assert "runs differ in data.image_size;" in caplog.text


def test_unreadable_runs_are_left_out_by_name(tmp_path, caplog, capsys):
    from bone_age.evaluation.table1 import main

    rng = np.random.default_rng(2)
    _fake_run(tmp_path / "good", {"seed": 1}, 0, rng)
    _fake_run(tmp_path / "bad_json", {"seed": 1}, 1, rng)
    (tmp_path / "bad_json" / "metrics.json").write_bytes(b"{\xff not json")
    _fake_run(tmp_path / "bad_pred", {"seed": 1}, 2, rng)
    preds = tmp_path / "bad_pred" / "predictions.csv"
    preds.write_text(preds.read_text().replace("\nS20,2,F,", "\nS20,2,F,sixty", 1))
    _fake_run(tmp_path / "bad_fold", {"seed": 1}, 3, rng)
    metrics = json.loads((tmp_path / "bad_fold" / "metrics.json").read_text())
    (tmp_path / "bad_fold" / "metrics.json").write_text(json.dumps({**metrics, "fold": "x"}))
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        assert main([str(tmp_path)]) == 1  # done, but runs were left out
    (row,) = read_rows(tmp_path / "table1.csv")
    assert int(row["folds"]) == 1
    for name, reason in (("bad_json", "not JSON"), ("bad_pred", "line 2: age"),
                         ("bad_fold", "fold 'x'")):
        assert f"{name}/" in caplog.text and reason in caplog.text
    assert caplog.text.count("run left out") == 3


def test_a_fifo_in_a_run_folder_is_left_out_not_read(tmp_path):
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(3)
    _fake_run(tmp_path / "good", {"seed": 1}, 0, rng)
    for name in ("metrics.json", "predictions.csv"):  # each would block a reader forever
        _fake_run(tmp_path / f"fifo_{name}", {"seed": 1}, 1, rng)
        (tmp_path / f"fifo_{name}" / name).unlink()
        os.mkfifo(tmp_path / f"fifo_{name}" / name)
    # A subprocess with a timeout: a regression fails instead of hanging the suite.
    done = subprocess.run([sys.executable, "-m", "bone_age.report", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # runs left out: exit 1, the table of the others
    for name in ("metrics.json", "predictions.csv"):
        assert f"fifo_{name}/{name}: the" in done.stderr
    assert done.stderr.count("not a regular file (a FIFO)") == 2
    (row,) = read_rows(tmp_path / "table1.csv")
    assert int(row["folds"]) == 1


def _damage_metrics(**changes):
    def damage(run):
        metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**metrics, **changes}))
    return damage


def _damage_prediction(value):
    def damage(run):
        path = run / "predictions.csv"
        lines = path.read_text().splitlines()
        cells = lines[1].split(",")
        cells[4] = value
        path.write_text("\n".join([lines[0], ",".join(cells), *lines[2:]]) + "\n")
    return damage


def _hydra_settings(text: bytes):
    def damage(run):
        _damage_metrics(settings=None)(run)
        metrics = json.loads((run / "metrics.json").read_text())
        del metrics["settings"]
        (run / "metrics.json").write_text(json.dumps(metrics))
        (run / ".hydra").mkdir()
        (run / ".hydra" / "config.yaml").write_bytes(text)
    return damage


DAMAGED = {
    # name: (damage, what the warning says)
    "fold_infinity": (_damage_metrics(fold=float("inf")), "fold inf is not a fold number"),
    "fold_fraction": (_damage_metrics(fold=1.5), "fold 1.5 is not a fold number"),
    "mean_nan": (_damage_metrics(train_mean_age=float("nan")), "train_mean_age nan is not a"),
    "settings_list": (_damage_metrics(settings=[1, 2]), "settings is a list"),
    "settings_yaml": (_hydra_settings(b"seed: [1\n  x: {"), "config.yaml: not a run's settings"),
    "settings_not_mapping": (_hydra_settings(b"- 1\n- 2\n"), "config.yaml: not a run's"),
    "latin1": (lambda run: (run / "predictions.csv").write_bytes(
        (run / "predictions.csv").read_bytes().replace(b"S", b"\xe9", 1)), "not UTF-8"),
    "nan": (_damage_prediction("nan"), "pred_age 'nan' is not a finite number"),
    "inf": (_damage_prediction("-inf"), "pred_age '-inf' is not a finite number"),
    "header_only": (lambda run: (run / "predictions.csv").write_text(
        "subject_id,fold,sex,age,pred_age,pred_sd\n"), "no predictions in it"),
    # Nested deeper than json's stack (RecursionError), or than any comparison should walk.
    "brackets": (lambda run: (run / "metrics.json").write_text("[" * 100_000 + "]" * 100_000),
                 "JSON nested too deep"),
    "deep_settings": (_damage_metrics(settings={"seed": json.loads("[" * 900 + "]" * 900)}),
                      "nested deeper than 32 levels"),
    "yaml_brackets": (_hydra_settings(b"[" * 100_000), "config.yaml: not a run's settings"),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_run_is_named_and_left_out(tmp_path, caplog, capsys, case):
    from bone_age.evaluation.table1 import main

    damage, said = DAMAGED[case]
    rng = np.random.default_rng(3)
    _fake_run(tmp_path / "good", {"seed": 1}, 0, rng)
    _fake_run(tmp_path / "damaged", {"seed": 1}, 1, rng)
    damage(tmp_path / "damaged")
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        assert main([str(tmp_path)]) == 1
    assert "damaged" in caplog.text and said in caplog.text and "run left out" in caplog.text
    assert "1 damaged run left out" in capsys.readouterr().err  # issue 33: agreement
    (row,) = read_rows(tmp_path / "table1.csv")
    assert int(row["folds"]) == 1 and int(row["n"]) == 12


def _run_of(folder, loss, fold, age, pred):
    folder.mkdir(parents=True)
    metrics = {"model": "vgg16", "backbone": "vgg16", "loss": loss, "fold": fold,
               "train_mean_age": 60.0, "baseline_mae": 0.0, "settings": {"loss.name": loss}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with (folder / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"])
        w.writerows([f"S{fold}_{i}", fold, "F", exact(a), exact(p), ""]
                    for i, (a, p) in enumerate(zip(age, pred, strict=True)))


def test_cells_that_learned_nothing_are_marked(tmp_path, caplog, monkeypatch):
    """Issue 33 item 6: a cell whose MAE is not below the baseline by its bootstrap interval
    is marked in table1.md, table1.csv, the figure and the console; a cell that learned is
    not."""
    from bone_age.evaluation import plots

    rng = np.random.default_rng(0)
    for fold in range(3):
        age = rng.uniform(40, 80, 40)
        _run_of(tmp_path / f"mv{fold}", "mv", fold, age, age + rng.normal(0, 2, 40))
        # Predicts about the training mean whatever the age: as good as the baseline, no better.
        _run_of(tmp_path / f"mse{fold}", "mse", fold, age, 60 + rng.normal(0, 0.5, 40))
    hatched = {}
    real_save = plots._save

    def spy(fig, path):
        if path.name == "mae_by_cell.png":
            hatched["bars"] = [p.get_hatch() for p in fig.axes[0].patches]
        return real_save(fig, path)
    monkeypatch.setattr(plots, "_save", spy)
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        md = report(tmp_path)
    rows = {r["loss"]: r for r in read_rows(tmp_path / "table1.csv")}
    unlearned, learned = rows["Mean squared loss"], rows["Softmax + Mean-Variance loss"]
    assert unlearned["below_baseline"] == "False" and learned["below_baseline"] == "True"
    assert float(unlearned["vs_baseline_high"]) >= 0 > float(learned["vs_baseline_high"])
    text = md.read_text()
    (mse_line,) = [line for line in text.splitlines() if "Mean squared loss" in line]
    (mv_line,) = [line for line in text.splitlines() if "Mean-Variance" in line]
    assert "†" in mse_line and "†" not in mv_line
    assert "† Not below the baseline: 1 of 2 cells" in text
    assert "1 of 2 Table 1 cells are not below the baseline" in caplog.text
    assert hatched["bars"].count("//") == 2  # the cell's bar and its legend entry


def test_a_pooled_row_of_one_site_says_site_not_sites():
    """Issue 33, item 9: counts agree with their nouns ("pooled (1 site)")."""
    from pathlib import Path

    from bone_age.evaluation.pooling import site_rows
    from bone_age.evaluation.run_files import FinishedRun

    fold = FinishedRun(Path("run"), {"split": "site", "test_site": "SITE-a",
                                     "train_mean_age": 60.0},
                       pred=np.array([60.0, 62.0]), age=np.array([58.0, 64.0]), settings={})
    row = {"key": "k", "model": "m", "loss": "mse", "settings": "", "n": 2, "mae": 2.0,
           "mae_sd": 0.0, "r": 1.0, "baseline_mae": 3.0}
    assert site_rows({"k": {0: fold}}, [row])[-1]["site"] == "pooled (1 site)"


def _started_run(folder):
    """A run folder of an interrupted sweep: its config written, no results."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 1\n")
    (folder / "checkpoints").mkdir()


def test_an_interrupted_sweep_says_what_is_missing_once(tmp_path, caplog, capsys):
    from bone_age.evaluation.table1 import main

    rng = np.random.default_rng(5)
    _fake_run(tmp_path / "0_vgg16_mv_fold0", {"seed": 1}, 0, rng)
    _started_run(tmp_path / "1_vgg16_mv_fold1")
    _started_run(tmp_path / "2_vgg16_mv_fold2")
    with caplog.at_level(logging.WARNING, logger="bone_age.evaluation"):
        assert main([str(tmp_path)]) == 1  # exit 1: something was left out
    assert "2 run folders without results" in caplog.text
    assert "1_vgg16_mv_fold1, 2_vgg16_mv_fold2" in caplog.text
    assert "2 unfinished runs left out of the table" in capsys.readouterr().err
    (row,) = read_rows(tmp_path / "table1.csv")
    assert int(row["folds"]) == 1


def test_a_sweep_with_no_finished_run_says_so_once(tmp_path, caplog, capsys):
    from bone_age.evaluation.table1 import main

    _started_run(tmp_path / "0_vgg16_mv_fold0")
    with caplog.at_level(logging.INFO):
        assert main([str(tmp_path)]) == 1
    said = caplog.text + capsys.readouterr().err
    assert said.count("no finished runs") == 1, said
    assert "1 run folder without results" in said
