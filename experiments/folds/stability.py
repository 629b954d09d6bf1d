"""Do the folds stay put? The 4,474-subject phantom's demographics (drawn as the phantom draws
them, without rendering), its fold assignment, and how many other subjects change test fold
when 1, 10 or 100 random subjects are removed; and how well each fold keeps the strata's
shares. With --compare OLD_FOLDS_PY, the same for another folds.py (e.g. the scikit-learn
StratifiedGroupKFold of an older checkout), side by side.

    python experiments/folds/stability.py [--compare /path/to/old/bone_age/data/folds.py]
"""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable

import numpy as np

from bone_age.data import folds as current
from bone_age.phantom.subject import sample_subject

SUBJECTS, SEED, K, REPEATS = 4474, 42, 5, 5


def demographics() -> tuple[list[float], list[str], list[str]]:
    subjects = [sample_subject(SEED, i) for i in range(SUBJECTS)]
    return ([float(s.age) for s in subjects], [s.sex for s in subjects],
            [s.subject_id for s in subjects])


def assignment_of(module) -> Callable:
    """subject -> test fold under ``module``'s fold_indices."""
    def assign(ages, sexes, subjects):
        out = {}
        for fold in range(K):
            for i in module.fold_indices(ages, sexes, subjects, fold, K, 0.1, SEED)["test"]:
                out[subjects[int(i)]] = fold
        return out
    return assign


def worst_share_deviation(ages, sexes, subjects, fold_of) -> float:
    """Largest |share of a stratum (ten-year band x sex) in a fold - its share overall|."""
    labels = current.strata(ages, sexes)
    folds = np.array([fold_of[s] for s in subjects])
    return max(abs(np.mean(labels[folds == k] == lab) - np.mean(labels == lab))
               for k in range(K) for lab in np.unique(labels))


def measure(assign: Callable, ages, sexes, subjects) -> dict:
    full = assign(ages, sexes, subjects)
    rng = np.random.default_rng(0)
    moved = {}
    for m in (1, 10, 100):
        counts = []
        for _ in range(REPEATS):
            gone = set(rng.choice(SUBJECTS, m, replace=False).tolist())
            keep = [i for i in range(SUBJECTS) if i not in gone]
            after = assign([ages[i] for i in keep], [sexes[i] for i in keep],
                           [subjects[i] for i in keep])
            counts.append(sum(after[s] != full[s] for s in after))
        moved[m] = counts
    return {"moved": moved, "deviation": worst_share_deviation(ages, sexes, subjects, full)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--compare", help="another folds.py to measure beside this one")
    args = p.parse_args()
    ages, sexes, subjects = demographics()
    results = {"this checkout": measure(assignment_of(current), ages, sexes, subjects)}
    if args.compare:
        spec = importlib.util.spec_from_file_location("other_folds", args.compare)
        other = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(other)
        results[args.compare] = measure(assignment_of(other), ages, sexes, subjects)
    print(f"{SUBJECTS} phantom subjects (seed {SEED}), {K} folds, split seed {SEED}; "
          f"{REPEATS} random removals each")
    for name, r in results.items():
        moved = "; ".join(f"remove {m}: {', '.join(map(str, c))} (median {np.median(c):g})"
                          for m, c in r["moved"].items())
        print(f"{name}: other subjects moved: {moved}; largest stratum-share deviation "
              f"{r['deviation']:.4f}")


if __name__ == "__main__":
    main()
