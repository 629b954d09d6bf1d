"""Calibration and age-gap statistics of age predictions (numpy; the loss decodes outputs).

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


# -- a model's calibration: fitted on inner validation, applied to any tested cohort -----------


@dataclass(frozen=True)
class Calibration:
    """What is fitted on the inner-validation split and travels with the model (its run-metadata
    record's ``calibration`` section), so that any later cohort is scored the same way.

    Args:
        gap: the age-gap correction.
        temperature: the softmax temperature (None: not fitted, or a model without classes).
        n_val: the inner-validation studies it was fitted on.
    """

    gap: GapCorrection
    temperature: float | None = None
    n_val: int = 0

    def to_dict(self) -> dict:
        return {"gap_correction": {"intercept": self.gap.intercept, "slope": self.gap.slope,
                                   "fitted_on": "inner-validation"},
                "temperature": self.temperature, "n_val": self.n_val}

    @classmethod
    def from_dict(cls, section: dict) -> Calibration:
        gap = section["gap_correction"]
        t = section.get("temperature")
        return cls(GapCorrection(float(gap["intercept"]), float(gap["slope"])),
                   None if t is None else float(t), int(section.get("n_val", 0)))


def fit_calibration(loss, val_age: np.ndarray, val_pred: np.ndarray, val_outputs: np.ndarray,
                    temperature: bool = True) -> Calibration:
    """The gap correction (and temperature, for a distribution loss) of the inner-validation
    split; never sees a tested study.

    Args:
        loss: the model's loss (``bone_age.losses.AgeLoss``).
        val_age: the inner-validation ages (float64).
        val_pred: the ages decoded from ``val_outputs`` (the evaluation pass's).
        val_outputs: the network's raw outputs on them.
        temperature: fit a temperature as well.
    """
    t = None
    if temperature and loss.predicts_distribution:
        import torch

        from bone_age.losses import age_to_class

        labels = age_to_class(torch.as_tensor(val_age), loss.min_age, loss.max_age).numpy()
        t = fit_temperature(val_outputs, labels)
    return Calibration(fit_gap_correction(val_age, val_pred), t, len(val_age))


def calibration_summary(
    loss, age: np.ndarray, pred: np.ndarray, outputs: np.ndarray | None,
    calibration: Calibration | None,
) -> tuple[dict, dict[str, np.ndarray], list[str]]:
    """Coverage, reliability and age gaps of a tested cohort under a model's calibration.

    Returns the summary (``calibration.json``), the per-study gaps (``age_gap.csv``) and what
    could not be computed, one phrase each (an old model file without the fitted calibration,
    an exported model without raw outputs).

    Args:
        loss: the model's loss.
        age: the cohort's ages (float64); pred: the predicted ages.
        outputs: the raw network outputs (logits), None where the model file gives none.
        calibration: the fitted calibration, None where the model file lacks it.
    """
    missing: list[str] = []
    gap = pred - age
    out: dict = {"n_val": calibration.n_val if calibration else None, "n_test": len(age),
                 "gap_mean": float(gap.mean()), "gap_r_age": correlation(gap, age)}
    per_study = {"pred_age": pred, "gap": gap}
    if calibration is None:
        missing.append("the bias-corrected age gap (no gap correction fitted on inner "
                       "validation in the model file)")
    else:
        corrected = calibration.gap.corrected_gap(pred, age)
        per_study["gap_corrected"] = corrected
        out.update(gap_corrected_mean=float(corrected.mean()),
                   gap_corrected_r_age=correlation(corrected, age),
                   gap_corrected_mae=float(np.abs(corrected).mean()),
                   gap_correction=calibration.to_dict()["gap_correction"])
    if not loss.predicts_distribution:
        return out, per_study, missing  # no intervals without a predicted distribution
    if outputs is None:
        missing.append("calibration coverage (the model file gives no raw outputs; re-export "
                       "it with this bone-age)")
        return out, per_study, missing
    from bone_age.losses import class_ages

    ages = class_ages(loss.min_age, loss.max_age).numpy().astype(float)
    probs, mean, sd = scaled_moments(outputs, ages)
    rel = {"level": list(LEVELS),
           "normal": list(normal_coverage(age, mean, sd).values()),
           "quantile": list(distribution_coverage(age, probs, ages).values())}
    out.update(cov50=_at(rel, "normal", 0.5), cov90=_at(rel, "normal", 0.9),
               cov50_q=_at(rel, "quantile", 0.5), cov90_q=_at(rel, "quantile", 0.9),
               mean_sd=float(sd.mean()))
    t = calibration.temperature if calibration else None
    if t is not None:
        probs_t, mean_t, sd_t = scaled_moments(outputs, ages, t)
        rel["normal_T"] = list(normal_coverage(age, mean_t, sd_t).values())
        rel["quantile_T"] = list(distribution_coverage(age, probs_t, ages).values())
        out.update(temperature=t, cov50_T=_at(rel, "normal_T", 0.5),
                   cov90_T=_at(rel, "normal_T", 0.9), mean_sd_T=float(sd_t.mean()),
                   mae_T=float(np.abs(mean_t - age).mean()))
    elif calibration is None:
        missing.append("temperature-scaled coverage (no temperature in the model file)")
    out["reliability"] = rel
    return out, per_study, missing


def headline(summary: dict) -> dict:
    """The summary's numbers for metrics.json (coverage keys prefixed ``calib_``)."""
    return {f"calib_{k}" if k.startswith(("cov", "mean_sd")) else k: v
            for k, v in summary.items()
            if not isinstance(v, dict) and k not in ("n_val", "n_test")}


def _at(rel: dict, key: str, level: float) -> float:
    return rel[key][[round(x, 3) for x in rel["level"]].index(level)]
