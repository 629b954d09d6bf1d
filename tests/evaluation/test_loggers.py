"""logs/metrics.csv counts epochs as the console, history.csv and the checkpoints do."""

from __future__ import annotations

from bone_age.evaluation.loggers import counted_from_one
from tests.conftest import read_rows, run_in_process, tiny_overrides


def test_fit_rows_count_from_one_and_evaluation_rows_keep_the_epochs_fitted():
    assert counted_from_one({"val/loss": 1.0, "epoch": 0}) == {"val/loss": 1.0, "epoch": 1}
    assert counted_from_one({"test/mae": 3.0, "epoch": 2}) == {"test/mae": 3.0, "epoch": 2}
    assert counted_from_one({"lr": 0.1}) == {"lr": 0.1}


def test_metrics_csv_epochs_match_history_and_checkpoints(cohort, tmp_path):
    out = tmp_path / "run"
    run_in_process([*tiny_overrides(cohort, tmp_path), "trainer.max_epochs=2"], out)
    rows = read_rows(out / "logs" / "metrics.csv")
    fit = {int(r["epoch"]) for r in rows if r.get("val/loss") or r.get("train/loss")}
    tested = {int(r["epoch"]) for r in rows
              if any(k.startswith("test/") and v for k, v in r.items())}
    assert fit == {1, 2}
    assert tested == {2}  # after epoch 2
    history = {int(r["epoch"]) for r in read_rows(out / "history.csv")}
    assert history == fit
    named = {int(p.stem.removeprefix("epoch")) for p in (out / "checkpoints").glob("epoch*.ckpt")}
    assert named <= fit
