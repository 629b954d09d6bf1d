"""Calibration numbers on known cases; fitted corrections never see test labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from bone_age.evaluation import calibration as cal
from bone_age.evaluation.fold_outputs import FoldEvaluation, SplitOutputs
from bone_age.losses import MeanVarianceLoss, MSELoss
from bone_age.training.writers.calibration_writer import CalibrationWriter

AGES = np.arange(40, 81, dtype=float)


def test_normal_coverage_of_exact_quantiles():
    # Errors placed at the normal quantiles (i + 0.5) / n: coverage equals the level.
    n = 1000
    mean, sd = np.full(n, 60.0), np.full(n, 2.0)
    age = mean + sd * norm.ppf((np.arange(n) + 0.5) / n)
    cov = cal.normal_coverage(age, mean, sd, (0.5, 0.9))
    assert cov[0.5] == pytest.approx(0.5, abs=2e-3)
    assert cov[0.9] == pytest.approx(0.9, abs=2e-3)
    assert cal.normal_coverage(age, mean, sd / 4, (0.9,))[0.9] < 0.4  # over-confident


def test_distribution_interval_of_one_hot_and_uniform():
    one_hot = np.zeros((1, len(AGES)))
    one_hot[0, 20] = 1.0  # all mass on 60 y, spread over 59.5-60.5
    low, high = cal.distribution_interval(one_hot, AGES, 0.5)
    assert (low[0], high[0]) == pytest.approx((59.75, 60.25))
    uniform = np.full((1, len(AGES)), 1 / len(AGES))  # uniform over 39.5-80.5
    low, high = cal.distribution_interval(uniform, AGES, 0.9)
    assert (low[0], high[0]) == pytest.approx((39.5 + 0.05 * 41, 80.5 - 0.05 * 41))
    assert cal.distribution_cdf(uniform, AGES, np.array([60.0]))[0] == pytest.approx(20.5 / 41)


def test_temperature_recovers_the_scale_of_over_confident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.0, (3000, len(AGES)))
    p = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    labels = np.array([rng.choice(len(AGES), p=row) for row in p])
    t = cal.fit_temperature(true_logits * 3.0, labels)
    assert t == pytest.approx(3.0, rel=0.15)


def test_gap_correction_removes_the_linear_age_trend():
    age = np.linspace(40, 80, 200)
    pred = 60 + 0.5 * (age - 60)  # regression to the mean: gap = 30 - 0.5 * age
    fit = cal.fit_gap_correction(age, pred)
    assert (fit.intercept, fit.slope) == pytest.approx((30.0, -0.5))
    assert cal.correlation(pred - age, age) == pytest.approx(-1.0)
    assert np.allclose(fit.corrected_gap(pred, age), 0.0, atol=1e-9)


def _logits(rng, age: np.ndarray) -> np.ndarray:
    return (-0.5 * ((AGES[None] - age[:, None] - rng.normal(0, 3, (len(age), 1))) / 4) ** 2
            ).astype(np.float32)


def _split(loss, age: np.ndarray, outputs: np.ndarray) -> SplitOutputs:
    return SplitOutputs.decode(loss, outputs, age, [f"s{i}" for i in range(len(age))],
                               ["F"] * len(age))


def _pass(loss, val_age, val_out, test_age, test_out) -> FoldEvaluation:
    return FoldEvaluation(loss, _split(loss, val_age, val_out), _split(loss, test_age, test_out))


def test_fitted_corrections_do_not_depend_on_test_labels():
    rng = np.random.default_rng(1)
    loss = MeanVarianceLoss()
    val_age, test_age = rng.integers(40, 81, 60).astype(float), rng.integers(40, 81, 80) + 0.0
    val_out, test_out = _logits(rng, val_age), _logits(rng, test_age)
    writer = CalibrationWriter(output_dir="unused", temperature=True)
    first, _ = writer.evaluate(_pass(loss, val_age, val_out, test_age, test_out))
    shuffled = rng.permutation(test_age) + 1.0  # different test labels
    second, _ = writer.evaluate(_pass(loss, val_age, val_out, shuffled, test_out))
    assert second["gap_correction"] == first["gap_correction"]
    assert second["temperature"] == first["temperature"]
    assert second["cov90"] != first["cov90"] or second["gap_mean"] != first["gap_mean"]
    third, _ = writer.evaluate(_pass(loss, val_age[::-1].copy(), val_out, test_age, test_out))
    assert third["gap_correction"] != first["gap_correction"]


def test_mse_models_get_gaps_but_no_intervals():
    rng = np.random.default_rng(2)
    age = rng.integers(40, 81, 30).astype(float)
    outputs = rng.normal(0, 0.3, (30, 1)).astype(np.float32)
    out, gaps = CalibrationWriter("unused").evaluate(_pass(MSELoss(), age, outputs, age, outputs))
    assert "cov50" not in out and "gap_corrected_r_age" in out
    assert np.array_equal(gaps["pred_age"], MSELoss().predict(torch.as_tensor(outputs))[0]
                          .numpy().astype(float))
