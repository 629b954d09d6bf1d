"""The run's one evaluation pass: after fitting, the network sees each inner-validation and test
study exactly once, on the run's device and precision, and every result file holds the ages
decoded from that pass, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from bone_age.training import precision
from bone_age.training.module import BoneAgeModule
from tests.conftest import read_rows, run_in_process, tiny_overrides


@pytest.fixture
def watched(monkeypatch) -> dict:
    """Records, after ``Trainer.fit`` returns, every study index the network is run on, the
    samples each forward sees and whether CPU autocast (bf16) was on for it."""
    seen: dict = {"fitted": False, "index": [], "samples": 0, "autocast": set()}
    fit, forward, step = pl.Trainer.fit, BoneAgeModule.forward, BoneAgeModule.predict_step

    def fit_then_mark(self, *args, **kwargs):
        out = fit(self, *args, **kwargs)
        seen["fitted"] = True
        return out

    def counted_forward(self, images, sex=None):
        if seen["fitted"]:
            seen["samples"] += len(images)
            seen["autocast"].add(torch.is_autocast_enabled("cpu"))
        return forward(self, images, sex)

    def recorded_step(self, batch, batch_idx=0):
        if seen["fitted"]:
            seen["index"] += batch["index"].tolist()
        return step(self, batch, batch_idx)

    monkeypatch.setattr(pl.Trainer, "fit", fit_then_mark)
    monkeypatch.setattr(BoneAgeModule, "forward", counted_forward)
    monkeypatch.setattr(BoneAgeModule, "predict_step", recorded_step)
    return seen


@pytest.mark.parametrize("precision_name", ["32-true", "bf16-mixed"])
def test_one_pass_feeds_every_result_file(precision_name, watched, cohort, tmp_path,
                                          monkeypatch):
    # bf16 must really run here, also on a CI CPU without native bf16 (emulated, slower).
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    out = tmp_path / "run"
    # 96 x 48: no strided convolution over a sliver, where the start-up check turns bf16 off.
    metrics = run_in_process([*tiny_overrides(cohort, tmp_path), "model=multi_vgg16", "loss=mv",
                              "data.image_size=[96,48]", f"trainer.precision={precision_name}"],
                             out)
    if metrics["settings"]["trainer.precision"] != precision_name:
        pytest.skip(f"{precision_name} refused at the start on this CPU (its warning says why)")
    # Exactly once per inner-validation and test study, nothing else, at the run's precision.
    assert watched["samples"] == len(watched["index"]) == metrics["n_val"] + metrics["n_test"]
    assert len(set(watched["index"])) == len(watched["index"])
    assert watched["autocast"] == {precision_name == "bf16-mixed"}

    predictions = {r["subject_id"]: r for r in read_rows(out / "predictions.csv")}
    gaps = {r["subject_id"]: r for r in read_rows(out / "age_gap.csv")}
    assert gaps.keys() == predictions.keys() and len(gaps) == metrics["n_test"]
    # The same decoded ages, as the same text (exact float64 repr), in both files.
    assert all(gaps[s]["pred_age"] == predictions[s]["pred_age"] for s in predictions)
    pred = np.array([float(r["pred_age"]) for r in predictions.values()])
    age = np.array([float(r["age"]) for r in predictions.values()])
    calibration = json.loads((out / "calibration.json").read_text())
    assert calibration["gap_mean"] == float((pred - age).mean())
    assert metrics["gap_mean"] == calibration["gap_mean"]
    assert metrics["mae"] == pytest.approx(float(np.abs(pred - age).mean()), abs=1e-12)
    # Coverage counts tested ages inside intervals around these very predictions (mv: SD given).
    sd = np.array([float(r["pred_sd"]) for r in predictions.values()])
    assert np.isfinite(sd).all() and calibration["n_test"] == len(pred)
