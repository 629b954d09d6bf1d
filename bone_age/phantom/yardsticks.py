"""Yardsticks for a phantom cohort: the Bayes MAE floor and an oracle MAE.

``bayes_mae_floor``: even knowing the latent bone age b exactly, chronological age is uncertain
because b | age ~ N(age, sigma^2). The best MAE estimator is the posterior median of age given
b under the cohort's discrete age prior. We integrate E|age - median(age | b)| numerically on a
fine b grid. The prior is the sex-pooled generating prior (age is drawn independently of sex,
so the sex-specific priors are identical and the floor is the same either way).

``oracle_mae``: cross-validated MAE of a gradient-boosting regressor predicting age from the
realised latent effect parameters (not b, not age) plus sex: what a perfect reader of every
effect could achieve with a flexible model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import norm


def posterior_median(
    b: np.ndarray, ages: np.ndarray, prior: np.ndarray, sigma: float
) -> np.ndarray:
    """Posterior median of the (discrete) age given observed bone ages b."""
    w = prior[None, :] * norm.pdf((np.asarray(b)[:, None] - ages[None, :]) / sigma)
    cdf = np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)
    return ages[np.argmax(cdf >= 0.5, axis=1)]


def bayes_mae_floor(ages: np.ndarray, prior: np.ndarray, sigma: float, step: float = 0.01) -> float:
    """E|age - posterior median(age | b)| by quadrature over b."""
    if sigma <= 0:
        return 0.0
    grid = np.arange(ages.min() - 8 * sigma, ages.max() + 8 * sigma, step)
    med = posterior_median(grid, ages, prior, sigma)
    dens = prior[None, :] * norm.pdf((grid[:, None] - ages[None, :]) / sigma) / sigma
    return float((dens * np.abs(ages[None, :] - med[:, None])).sum() * step)


def oracle_mae(features: np.ndarray, ages: Sequence[int], seed: int = 0) -> float:
    """5-fold cross-validated MAE of HistGradientBoostingRegressor on latent effect values."""
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.model_selection import KFold, cross_val_predict

    y = np.asarray(ages, dtype=float)
    if len(y) < 20:
        return float("nan")  # too few subjects for a meaningful cross-validation
    model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.05, random_state=seed)
    cv = KFold(5, shuffle=True, random_state=seed)
    pred = cross_val_predict(model, features, y, cv=cv)
    return float(np.mean(np.abs(pred - y)))
