"""Subject-level cross-validation folds, stratified by age band and sex (scikit-learn)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def strata(ages: Sequence[float], sexes: Sequence[str], n_bands: int = 4) -> np.ndarray:
    """Stratum label per study: age band (quantiles of the cohort's ages) x sex."""
    ages = np.asarray(ages, dtype=float)
    edges = np.unique(np.quantile(ages, np.linspace(0, 1, n_bands + 1)[1:-1]))
    return np.searchsorted(edges, ages, side="right") * 2 + (np.asarray(sexes) == "M")


def _split(
    labels: np.ndarray, groups: Sequence[str], n_splits: int, which: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if np.unique(labels, return_counts=True)[1].max() < n_splits:
        labels = np.zeros_like(labels)  # too few studies to stratify: plain grouped split
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # Small strata cannot be spread over every split; the stratification is then approximate.
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        for i, (rest, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            if i == which:
                return rest, held
    raise ValueError(f"data.fold must be in 0..{n_splits - 1}, got {which}")


def fold_indices(
    ages: Sequence[float],
    sexes: Sequence[str],
    subjects: Sequence[str],
    fold: int,
    num_folds: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Indices of the train, inner-validation and test (held-out fold) studies.

    Grouping by subject keeps every subject in exactly one part; the inner validation split is
    drawn from the training folds only, so the test fold never influences training.
    """
    if num_folds < 2:
        raise ValueError(f"data.num_folds must be at least 2, got {num_folds}")
    if not 0 < val_fraction < 0.5:
        raise ValueError(f"data.val_fraction must be in (0, 0.5), got {val_fraction}")
    labels = strata(ages, sexes)
    subjects = np.asarray(subjects)
    train_val, test = _split(labels, subjects, num_folds, fold, seed)
    n_inner = max(2, round(1 / val_fraction))
    train, val = _split(labels[train_val], subjects[train_val], n_inner, 0, seed + 1)
    return {"train": train_val[train], "val": train_val[val], "test": test}
