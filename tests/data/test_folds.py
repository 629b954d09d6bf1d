"""Cross-validation folds: subject-level, complete, stratified, deterministic."""

import csv
import os

import numpy as np
import pytest

from bone_age.data import BoneAgeDataModule, DataError
from bone_age.data.folds import fold_indices, fold_parts
from bone_age.data.preprocess import Preprocess
from bone_age.data.sources import ManifestSource
from bone_age.phantom.source import PhantomSource


@pytest.fixture(scope="module")
def labels():
    rng = np.random.default_rng(0)
    n = 600
    ages = rng.integers(40, 81, n).astype(float)
    sexes = np.where(rng.random(n) < 0.63, "F", "M")
    subjects = [f"S{i:04d}" for i in range(n)]
    return ages, sexes, subjects


def test_folds_partition_subjects_without_overlap(labels):
    ages, sexes, subjects = labels
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


def test_folds_are_stratified_by_age_band_and_sex(labels):
    ages, sexes, subjects = labels
    for fold in range(5):
        test = fold_indices(ages, sexes, subjects, fold, 5, 0.1, seed=3)["test"]
        assert abs((sexes[test] == "F").mean() - (sexes == "F").mean()) < 0.03
        for low, high in [(40, 50), (50, 60), (60, 70), (70, 81)]:
            share = ((ages[test] >= low) & (ages[test] < high)).mean()
            assert abs(share - ((ages >= low) & (ages < high)).mean()) < 0.03


def test_same_seed_same_folds_other_seed_other_folds(labels):
    ages, sexes, subjects = labels
    a = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=3)["test"]
    b = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=3)["test"]
    c = fold_indices(ages, sexes, subjects, 1, 5, 0.1, seed=4)["test"]
    assert np.array_equal(a, b) and not np.array_equal(np.sort(a), np.sort(c))


def test_bad_fold_is_an_error(labels):
    with pytest.raises(ValueError, match="data.fold"):
        fold_indices(*labels, fold=5, num_folds=5)


def test_unknown_labels_keep_their_place_in_their_own_strata(labels):
    ages, sexes, subjects = labels
    ages = [None if i % 50 == 0 else a for i, a in enumerate(ages)]
    sexes = [None if i % 70 == 1 else s for i, s in enumerate(sexes)]
    parts = fold_parts(ages, sexes, subjects, 2, 5, 0.1, seed=3)
    assert sorted(parts) == sorted(subjects)  # every named subject has a part
    tested = [s for s, part in parts.items() if part == "test"]
    assert abs(len(tested) - len(subjects) / 5) <= 2


# -- folds of the data module: a function of the manifest's cohort alone ----------------------

def _manifest(path, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "age", "sex", "anterior", "posterior"])
        w.writerows(rows)
    return path


def _rows(manifest):
    with manifest.open() as f:
        return [[r["subject_id"], r["age"], r["sex"], str(manifest.parent / r["anterior"]),
                 str(manifest.parent / r["posterior"])] for r in csv.DictReader(f)]


def _parts(manifest, cache, views=2, fold=1, **kwargs):
    dm = BoneAgeDataModule(ManifestSource(str(manifest)), Preprocess((32, 16)),
                           cache_dir=str(cache), views=views, fold=fold, cache_workers=0,
                           progress=False, seed=5,
                           **kwargs)
    dm.setup("fit")
    return {part: {dm.studies[int(i)].subject_id for i in index}
            for part, index in dm.splits.items()}, dm


def _without(parts, subject):
    return {part: ids - {subject} for part, ids in parts.items()}


@pytest.fixture(scope="module")
def broken_posterior(cohort, tmp_path_factory):
    """The session cohort with one subject's posterior view in a file that does not decode."""
    tmp = tmp_path_factory.mktemp("broken")
    rows = _rows(cohort)
    junk = tmp / "junk_post.dcm"
    junk.write_bytes(b"DICM" + b"\0" * 300)
    rows[7][4] = str(junk)
    return _manifest(tmp / "manifest.csv", rows), rows[7][0], tmp / "cache"


def test_single_and_dual_view_models_test_the_same_subjects(broken_posterior):
    manifest, broken, cache = broken_posterior
    single, _ = _parts(manifest, cache, views=1)
    dual, dm = _parts(manifest, cache, views=2)
    assert [p.status for p in dm.problems] == ["unreadable"]  # the study left the dual model
    assert broken in set.union(*single.values()) and broken not in set.union(*dual.values())
    assert _without(single, broken) == dual  # and nobody else moved: test, val and train


@pytest.mark.parametrize("fold", [0, 3])
def test_file_level_exclusions_move_nobody_else(cohort, broken_posterior, tmp_path, fold):
    manifest, broken, cache = broken_posterior
    reference, _ = _parts(cohort, cache, fold=fold)
    again, _ = _parts(cohort, cache, fold=fold)
    assert again == reference  # same manifest and seed: same folds
    rows = _rows(cohort)
    rows[11][3] = rows[11][4] = str(tmp_path / "gone.dcm")  # a missing file: a manifest problem
    missing, dm = _parts(_manifest(tmp_path / "missing.csv", rows), cache, fold=fold)
    assert [p.status for p in dm.problems] == ["missing_file"]
    assert missing == _without(reference, rows[11][0])
    unreadable, _ = _parts(manifest, cache, fold=fold)
    assert unreadable == _without(reference, broken)
    # A narrower age range (another loss's classes) drops studies, not anyone's fold.
    narrow, dm = _parts(cohort, cache, fold=fold, age_range=(50, 80))
    young = {p.subject_id for p in dm.problems}
    assert young and {p.status for p in dm.problems} == {"age_range"}
    assert narrow == {part: ids - young for part, ids in reference.items()}


@pytest.mark.parametrize("key, value", [("num_folds", 1), ("val_fraction", 0.7), ("fold", -1)])
def test_fold_settings_are_one_line_data_errors(key, value):
    with pytest.raises(DataError, match=f"data.{key} must be"):
        BoneAgeDataModule(PhantomSource(40), **{key: value})


def test_a_small_cohort_gets_fewer_inner_splits(labels):
    ages, sexes, subjects = (x[:12] for x in labels)
    split = fold_indices(ages, sexes, subjects, 0, 5, 0.1, seed=1)  # 9 subjects for 10 splits
    assert len(split["val"]) >= 1 and sum(map(len, split.values())) == 12


# -- folds that stay put, saved and given back --------------------------------------------------

def _assignment(labels, keep=None):
    from bone_age.data.folds import fold_assignment

    ages, sexes, subjects = labels
    idx = [i for i in range(len(subjects)) if keep is None or i in keep]
    return fold_assignment([ages[i] for i in idx], [sexes[i] for i in idx],
                           [subjects[i] for i in idx], 5, seed=3)


@pytest.mark.parametrize("removed", [1, 10, 30])
def test_removing_subjects_moves_almost_nobody_else(labels, removed):
    full = _assignment(labels)
    rng = np.random.default_rng(removed)
    gone = set(rng.choice(len(labels[2]), removed, replace=False).tolist())
    after = _assignment(labels, keep=set(range(len(labels[2]))) - gone)
    moved = sum(after[s] != full[s] for s in after)
    # At most the subjects at the edges of each fold's run in the strata that lost someone.
    assert moved <= 4 * min(removed, 10), moved
    added = _assignment(labels)  # and the same cohort gives the same folds
    assert added == full


def test_a_run_saves_its_folds_and_a_later_run_takes_them(cohort, tmp_path):
    from bone_age.data.folds import read_folds, write_folds

    reference, dm = _parts(cohort, tmp_path / "cache")
    saved = write_folds(tmp_path / "folds.csv", dm.fold_of)
    assert set(read_folds(saved, 5)) == set.union(*reference.values())
    again, _ = _parts(cohort, tmp_path / "cache", folds_file=str(saved))
    assert again["test"] == reference["test"]
    # A subject the saved assignment does not name is left out and reported, nobody moves.
    rows = saved.read_text().splitlines()
    dropped = rows[1].split(",")[0]
    (tmp_path / "fewer.csv").write_text("\n".join([rows[0], *rows[2:]]) + "\n")
    fewer, dm = _parts(cohort, tmp_path / "cache", folds_file=str(tmp_path / "fewer.csv"))
    assert [(p.subject_id, p.status) for p in dm.problems] == [(dropped, "no_fold")]
    assert fewer["test"] == reference["test"] - {dropped}


@pytest.mark.parametrize("text, message", [
    ("subject,fold\nS1,0\n", "needs columns subject_id and fold"),
    ("subject_id,fold\nS1,7\n", "line 2: fold '7' is not in 0..4"),
    ("subject_id,fold\nS1,0\n,1\n", "line 3: empty subject_id"),
    ("subject_id,fold\nS1,0\nS1,2\n", "line 3: subject 'S1' given two folds"),
    ("fifo", "is not a regular file"),
    # Digits that str.isdigit takes and int() refuses or reads (issue 37).
    ("subject_id,fold\nS1,0\nS2,\u00b2\n", "line 3: fold '\u00b2' is not in 0..4"),
    ("subject_id,fold\nS1,\u0663\n", "line 2: fold '\u0663' is not in 0..4"),
    ("subject_id,fold\nS1," + "0" * 5000 + "1\n", "line 2: fold '0000"),
    # A field over csv's limit, a line with no end (a sparse or binary file).
    ("subject_id,fold\nS1,0\n\"" + "x" * 140_000 + "\",1\n", "line 3: data.folds_file is not"),
    ("subject_id,fold\nS1,0\nS" + "x" * 140_000 + ",1\n", "line 3: data.folds_file is not"),
    ("sparse", "line 1: data.folds_file is not a subject_id,fold table"),
])
def test_a_bad_folds_file_is_one_line_naming_file_and_line(cohort, tmp_path, text, message):
    path = tmp_path / "folds.csv"
    if text == "fifo":
        os.mkfifo(path)  # would block a reader forever
    elif text == "sparse":
        with path.open("wb") as f:
            f.truncate(2**30)  # 1 GB of NUL bytes, no newline
    else:
        path.write_text(text)
    with pytest.raises(DataError, match=message) as err:
        _parts(cohort, tmp_path / "cache", folds_file=str(path))
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
