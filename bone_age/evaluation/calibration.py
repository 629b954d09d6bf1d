"""Calibration and age-gap statistics of age predictions: pure numpy functions.

- Interval coverage: the fraction of true ages inside the central ``level`` interval of each
  prediction, either under a normal approximation (predicted mean +- z * SD) or from the
  quantiles of the predicted softmax distribution itself (one-year classes, each spread
  uniformly over its year so the CDF is continuous).
- Temperature scaling: one scalar T dividing the logits, fitted by minimising the class
  negative log-likelihood on the inner-validation split only.
- Age gap: predicted minus chronological age. Regression to the mean makes the raw gap
  correlate negatively with age; the usual linear correction fits gap = a + b * age on the
  inner-validation split only and subtracts it. The corrected gap uses the true age of the
  subject, so its "accuracy" is not the model's accuracy and must never be quoted as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import norm

LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)


def normal_interval(
    mean: np.ndarray, sd: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval of N(mean, sd^2)."""
    z = norm.ppf(0.5 + level / 2)
    return mean - z * sd, mean + z * sd


def distribution_cdf(probs: np.ndarray, class_ages: np.ndarray, x: np.ndarray) -> np.ndarray:
    """CDF at x[i] of row i of ``probs``; class j is spread uniformly over class_ages[j] +- 0.5."""
    edges = class_ages - 0.5
    frac = np.clip(x[:, None] - edges[None, :], 0.0, 1.0)  # share of each class below x
    return (probs * frac).sum(axis=1)


def distribution_interval(
    probs: np.ndarray, class_ages: np.ndarray, level: float
) -> tuple[np.ndarray, np.ndarray]:
    """Central ``level`` interval from the quantiles of each row's (continuous) distribution."""
    cum = np.concatenate([np.zeros((len(probs), 1)), np.cumsum(probs, axis=1)], axis=1)
    edges = np.append(class_ages - 0.5, class_ages[-1] + 0.5)

    def quantile(q: float) -> np.ndarray:
        return np.array([np.interp(q, c, edges) for c in np.maximum.accumulate(cum, axis=1)])

    return quantile(0.5 - level / 2), quantile(0.5 + level / 2)


def coverage(age: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Fraction of ages inside [low, high]."""
    return float(np.mean((age >= low) & (age <= high))) if len(age) else float("nan")


def normal_coverage(
    age: np.ndarray, mean: np.ndarray, sd: np.ndarray, levels: Sequence[float] = LEVELS
) -> dict[float, float]:
    return {lv: coverage(age, *normal_interval(mean, sd, lv)) for lv in levels}


def distribution_coverage(
    age: np.ndarray, probs: np.ndarray, class_ages: np.ndarray, levels: Sequence[float] = LEVELS
) -> dict[float, float]:
    return {lv: coverage(age, *distribution_interval(probs, class_ages, lv)) for lv in levels}


def class_nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the integer class labels under softmax(logits / T)."""
    logp = log_softmax(logits / temperature, axis=1)
    return float(-logp[np.arange(len(labels)), labels].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] minimising the class NLL (call with inner-validation data only)."""
    res = minimize_scalar(lambda log_t: class_nll(logits, labels, float(np.exp(log_t))),
                          bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def scaled_moments(
    logits: np.ndarray, class_ages: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """softmax(logits / T), its mean and SD per row."""
    p = softmax(logits / temperature, axis=1)
    mean = p @ class_ages
    sd = np.sqrt(np.clip((p * (class_ages[None, :] - mean[:, None]) ** 2).sum(axis=1), 0, None))
    return p, mean, sd


@dataclass(frozen=True)
class GapCorrection:
    """gap = intercept + slope * age, fitted on the inner-validation split."""

    intercept: float
    slope: float

    def corrected_gap(self, pred: np.ndarray, age: np.ndarray) -> np.ndarray:
        return (pred - age) - (self.intercept + self.slope * age)


def fit_gap_correction(val_age: np.ndarray, val_pred: np.ndarray) -> GapCorrection:
    """Least-squares line of the validation gap on validation age (never test labels)."""
    slope, intercept = np.polyfit(np.asarray(val_age, float), val_pred - val_age, deg=1)
    return GapCorrection(float(intercept), float(slope))


def correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r, NaN when undefined (fewer than 2 points or no spread)."""
    if len(x) < 2 or np.std(x) == 0 or np.std(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])
