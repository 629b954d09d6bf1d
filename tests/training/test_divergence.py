"""A run whose losses or predictions stop being numbers fails loudly: one line, exit 2, no
metrics.json; the report refuses NaN predictions instead of pooling them."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from bone_age.evaluation.fold_outputs import SplitOutputs
from bone_age.evaluation.table1 import report
from bone_age.losses import MSELoss
from bone_age.training.callbacks.divergence import TrainingDiverged, check_predictions
from tests.conftest import tiny_overrides


def test_an_exploding_run_ends_in_one_line_and_writes_no_results(cohort, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bone_age.run", *tiny_overrides(cohort, tmp_path),
           "model=vgg16", "loss=mv", "module.optimizer.lr=1e12", "trainer.max_epochs=4",
           f"hydra.run.dir={out}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    said = done.stderr + done.stdout
    assert done.returncode == 2, said[-3000:]
    (line,) = [ln for ln in said.splitlines() if "bone-age run:" in ln]
    assert "training diverged at epoch" in line and "lower module.optimizer.lr (now 1e+12)" in line
    assert "Traceback" not in said
    assert not (out / "metrics.json").exists() and not (out / "predictions.csv").exists()


def _split(pred: list[float]) -> SplitOutputs:
    outputs = np.array([[(p - 60.0) / 20.0] for p in pred], dtype=np.float32)
    return SplitOutputs.decode(MSELoss(), outputs, [50.0] * len(pred), ["a"] * len(pred),
                               ["F"] * len(pred))


def test_non_finite_predictions_stop_the_run():
    check_predictions({"val": _split([50.0, 61.0]), "test": _split([70.0])}, 3)
    with pytest.raises(TrainingDiverged, match=r"epoch 4\) predict a NaN or infinite age for 1 "
                                               r"of 3 test studies"):
        check_predictions({"val": _split([50.0]), "test": _split([50.0, math.nan, 62.0])}, 3)


def test_the_report_leaves_out_a_run_with_nan_predictions(tmp_path, caplog):
    for name, pred in (("good", "61.5"), ("bad", "nan")):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps(
            {"model": "vgg16", "backbone": "vgg16", "loss": "mv", "fold": int(name == "bad"),
             "train_mean_age": 60.0, "settings": {"seed": 1}}))
        (run / "predictions.csv").write_text(f"subject_id,age,pred_age\ns1,60.0,{pred}\n"
                                             "s2,70.0,66.0\n")
    report(tmp_path)
    rows = (tmp_path / "table1.csv").read_text().splitlines()
    assert len(rows) == 2 and ",1," in rows[1]  # one row, of the one good fold
    assert "bad" in caplog.text and "not a finite number" in caplog.text
