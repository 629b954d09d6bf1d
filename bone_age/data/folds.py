"""Subject-level cross-validation folds, stratified by age band and sex (scikit-learn).

Folds are drawn once per cohort: over every subject the manifest names (``read_cohort``), not
over the studies one model can use. Which studies a run then leaves out (unreadable or missing
files, a view the model reads, ages outside its class range) decides only whether that study is
used, never where anyone else goes. Subjects whose age or sex is missing or unusable still hold
their place, in strata of their own ("age unknown", "sex unknown"), so fixing or blanking one
label does not take a subject out of the cohort.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold


def strata(
    ages: Sequence[float | None], sexes: Sequence[str | None], n_bands: int = 4
) -> np.ndarray:
    """Stratum label per subject: age band (quantiles of the known ages) x sex.

    An unknown age (None or NaN) is a band of its own, an unknown sex (not F or M) a sex of its
    own.
    """
    ages = np.array([np.nan if a is None else a for a in ages], dtype=float)
    known = np.isfinite(ages)
    band = np.full(len(ages), n_bands)
    if known.any():
        edges = np.unique(np.quantile(ages[known], np.linspace(0, 1, n_bands + 1)[1:-1]))
        band[known] = np.searchsorted(edges, ages[known], side="right")
    sex = np.array([{"F": 0, "M": 1}.get(s, 2) for s in sexes])
    return band * 3 + sex


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


def check_fold_settings(fold: int, num_folds: int, val_fraction: float) -> None:
    """ValueError naming the data.* key that cannot describe a cross-validation."""
    if num_folds < 2:
        raise ValueError(f"data.num_folds must be at least 2, got {num_folds}")
    if not 0 <= fold < num_folds:
        raise ValueError(f"data.fold must be in 0..{num_folds - 1}, got {fold}")
    check_val_fraction(val_fraction)


def check_val_fraction(val_fraction: float) -> None:
    """ValueError naming data.val_fraction when it cannot size an inner validation split."""
    if not 0 < val_fraction < 0.5:
        raise ValueError(f"data.val_fraction must be in (0, 0.5), got {val_fraction}")


def _inner_split(
    labels: np.ndarray, subjects: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and inner-validation indices (into ``subjects``) of a fold's training subjects."""
    # A small cohort gets fewer, larger inner splits rather than an error.
    n_inner = max(2, min(round(1 / val_fraction), len(np.unique(subjects))))
    return _split(labels, subjects, n_inner, 0, seed + 1)


def fold_indices(
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    subjects: Sequence[str],
    fold: int,
    num_folds: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Indices of the train, inner-validation and test (held-out fold) subjects of a cohort.

    Grouping by subject keeps every subject in exactly one part; the inner validation split is
    drawn from the training folds only, so the test fold never influences training. Both splits
    are a function of the arguments alone: pass the whole cohort (``read_cohort``), then drop
    the subjects a run cannot use from their parts.
    """
    check_fold_settings(fold, num_folds, val_fraction)
    labels = strata(ages, sexes)
    subjects = np.asarray(subjects)
    if len(np.unique(subjects)) < num_folds:
        raise ValueError(f"{len(np.unique(subjects))} subjects cannot fill {num_folds} folds")
    train_val, test = _split(labels, subjects, num_folds, fold, seed)
    train, val = _inner_split(labels[train_val], subjects[train_val], val_fraction, seed)
    return {"train": train_val[train], "val": train_val[val], "test": test}


def fold_parts(
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    subjects: Sequence[str],
    fold: int,
    num_folds: int = 5,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """The part ("train", "val" or "test") of each subject of the cohort, by subject id.

    Args:
        ages, sexes, subjects: the whole cohort, one entry per subject (see ``fold_indices``).
        fold, num_folds, val_fraction, seed: as in ``fold_indices``.
    """
    splits = fold_indices(ages, sexes, subjects, fold, num_folds, val_fraction, seed)
    return {subjects[int(i)]: part for part, index in splits.items() for i in index}


SPLITS = ("stratified", "site")  # data.split


def check_split(split: str) -> None:
    """ValueError naming data.split when it is not one of ``SPLITS``."""
    if split not in SPLITS:
        raise ValueError(f"data.split must be {' or '.join(SPLITS)}, got {split!r}")


def site_order(sites: Sequence[str]) -> list[str]:
    """The sites of a cohort in fold order (sorted pseudonyms: fold k holds out the k-th)."""
    return sorted({s for s in sites if s})


def site_fold_parts(
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    subjects: Sequence[str],
    sites: Sequence[str],
    fold: int,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """Leave-one-site-out: the part of each subject when fold ``fold`` tests the fold-th site.

    Every subject of that site is tested; the inner validation split is drawn from the other
    sites' subjects as in ``fold_indices`` (grouped by subject, stratified by age band and
    sex). A subject without a site cannot be placed (part ``"no_site"``): it is never trained
    on, so it cannot leak a held-out site into training.

    Args:
        ages, sexes, subjects, sites: the whole cohort, one entry per subject.
        fold: which site (in ``site_order``) is tested.
        val_fraction, seed: the inner validation split, as in ``fold_indices``.
    """
    order = site_order(sites)
    if len(order) < 2:
        raise ValueError(f"data.split=site needs at least 2 sites; the site column names "
                         f"{len(order)}")
    if not 0 <= fold < len(order):
        raise ValueError(f"data.fold must be in 0..{len(order) - 1} (data.split=site: one fold "
                         f"per site, {len(order)} sites), got {fold}")
    check_val_fraction(val_fraction)
    subjects, sites = np.asarray(subjects), np.asarray(sites, dtype=object)
    rest = np.flatnonzero((sites != order[fold]) & (sites != ""))
    labels = strata([ages[i] for i in rest], [sexes[i] for i in rest])
    train, val = _inner_split(labels, subjects[rest], val_fraction, seed)
    parts = {str(s): "test" if site == order[fold] else "no_site"
             for s, site in zip(subjects, sites, strict=True)}
    parts.update({str(subjects[i]): "train" for i in rest[train]})
    parts.update({str(subjects[i]): "val" for i in rest[val]})
    return parts
