"""Cross-validation folds: subject-level, complete, stratified, deterministic."""

import numpy as np
import pytest

from bone_age.data.folds import fold_indices


@pytest.fixture(scope="module")
def cohort():
    rng = np.random.default_rng(0)
    n = 600
    ages = rng.integers(40, 81, n).astype(float)
    sexes = np.where(rng.random(n) < 0.63, "F", "M")
    subjects = [f"S{i:04d}" for i in range(n)]
    return ages, sexes, subjects


def test_folds_partition_subjects_without_overlap(cohort):
    ages, sexes, subjects = cohort
    tests = []
    for fold in range(5):
        s = fold_indices(ages, sexes, subjects, fold, 5, 0.1, seed=3)
        parts = [set(np.asarray(subjects)[s[k]]) for k in ("train", "val", "test")]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert sum(map(len, parts)) == len(subjects)
        assert abs(len(s["val"]) - 0.1 * (len(s["train"]) + len(s["val"]))) < 10
        tests.append(s["test"])
    all_test = np.concatenate(tests)
    assert sorted(all_test) == list(range(len(subjects)))  # every subject tested exactly once


def test_folds_are_stratified_by_age_band_and_sex(cohort):
    ages, sexes, subjects = cohort
    for fold in range(5):
        test = fold_indices(ages, sexes, subjects, fold, 5, 0.1, seed=3)["test"]
        assert abs((sexes[test] == "F").mean() - (sexes == "F").mean()) < 0.03
        for low, high in [(40, 50), (50, 60), (60, 70), (70, 81)]:
            share = ((ages[test] >= low) & (ages[test] < high)).mean()
            assert abs(share - ((ages >= low) & (ages < high)).mean()) < 0.03


def test_same_seed_same_folds_other_seed_other_folds(cohort):
    ages, sexes, subjects = cohort
    a = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=3)["test"]
    b = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=3)["test"]
    c = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=4)["test"]
    assert np.array_equal(a, b) and not np.array_equal(np.sort(a), np.sort(c))


def test_bad_fold_is_an_error(cohort):
    with pytest.raises(ValueError, match="data.fold"):
        fold_indices(*cohort, fold=5, num_folds=5)
