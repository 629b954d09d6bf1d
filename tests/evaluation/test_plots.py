"""Figures: every run figure from a tiny run, and the report's per-cell and grid figures."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bone_age.evaluation import plots
from bone_age.evaluation.table1 import report
from tests.conftest import run_in_process, tiny_overrides

RUN_FIGURES = ("scatter.png", "bland_altman.png", "error_by_group.png", "learning_curves.png")


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_run_writes_every_figure_and_history(cohort, tmp_path):
    out = tmp_path / "run"
    run_in_process([*tiny_overrides(cohort, tmp_path), "model=vgg16", "trainer.max_epochs=2"], out)
    for name in RUN_FIGURES:
        assert _png(out / name), name
    with (out / "history.csv").open() as f:
        history = list(csv.DictReader(f))
    assert [int(h["epoch"]) for h in history] == [1, 2]  # counted as the log counts
    # The tested checkpoint's name, metrics.json and the log name the same epoch.
    best = json.loads((out / "metrics.json").read_text())["best_epoch"]
    assert best in (1, 2)
    assert [p.name for p in (out / "checkpoints").glob("epoch*.ckpt")] == [f"epoch{best:03d}.ckpt"]
    assert all(float(h["train/loss"]) > 0 and float(h["val/mae"]) >= 0 for h in history)


def test_plot_functions_accept_edge_cases(tmp_path):
    rng = np.random.default_rng(0)
    age = rng.uniform(40, 80, 30)
    pred = age + rng.normal(0, 3, 30)
    sex = np.where(age > 60, "F", "M")  # some bands with one sex only
    assert _png(plots.bland_altman_plot(age, pred, tmp_path / "ba.png"))
    assert _png(plots.error_by_group_plot(age, pred, sex, tmp_path / "eg.png"))
    assert _png(plots.learning_curves_plot([{"epoch": 0, "train/loss": 3.0}],
                                           tmp_path / "lc.png"))


def _fake_run(folder, model, loss, fold, rng):
    folder.mkdir(parents=True)
    age = rng.uniform(40, 80, 20)
    pred = age + rng.normal(0, 4, 20)
    (folder / "metrics.json").write_text(json.dumps(
        {"model": model, "backbone": "vgg16", "loss": loss, "fold": fold, "baseline_mae": 8.0}))
    with (folder / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"])
        w.writerows([f"S{fold}{i}", fold, "F", f"{a:g}", f"{p:.3f}", ""]
                    for i, (a, p) in enumerate(zip(age, pred, strict=True)))


def test_report_writes_cell_scatters_and_mae_grid(tmp_path):
    rng = np.random.default_rng(1)
    for model in ("vgg16", "multi_vgg16"):
        for loss in ("mse", "mv"):
            for fold in (0, 1):
                _fake_run(tmp_path / f"{model}_{loss}_{fold}", model, loss, fold, rng)
    assert report(tmp_path) == tmp_path / "table1.md"
    figures = tmp_path / "figures"
    assert _png(figures / "mae_by_cell.png")
    cells = sorted(p.name for p in figures.glob("scatter_*.png"))
    assert cells == sorted(f"scatter_{m}_vgg16_{lo}.png" for m in ("vgg16", "multi_vgg16")
                           for lo in ("mse", "mv"))
    with (tmp_path / "table1.csv").open() as f:
        assert "key" not in next(csv.reader(f))


@pytest.mark.parametrize("n", [1, 2])
def test_scatter_with_few_subjects(tmp_path, n):
    assert _png(plots.scatter_plot(np.full(n, 50.0), np.full(n, 52.0), tmp_path / "s.png"))
