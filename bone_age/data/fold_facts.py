"""The facts of one cross-validation fold that a run reports, gathered once by the data module.

Who was trained, validated and tested on (by the study index batches carry), who was left out
and why, the cohort's fold assignment and how the test fold was chosen. The evaluation pass
(ages and pseudonyms of the studies it saw), the results (``metrics.json``, ``excluded.csv``,
``folds.csv``) and the model's record (``training_data``) all read them from here
(``BoneAgeDataModule.facts``), so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.data.manifest import Problem, Study


@dataclass(frozen=True, eq=False)
class FoldFacts:
    """One fold of a cohort, as set up for training.

    Args:
        fold, num_folds: the tested fold and how many there are (for leave-one-site-out, the
            number of sites).
        studies: the usable studies, at the index a batch carries for each.
        splits: ``train``, ``val`` and ``test``: indices into ``studies``.
        problems: the studies left out, with their reasons.
        assignment: the cohort's fold assignment (subject_id -> test fold), for ``folds.csv``.
        split_info: how the test fold was chosen (empty for the default stratified folds; the
            split and the held-out site's pseudonym for leave-one-site-out).
        manifest: the cohort's manifest.
        is_phantom: whether the cohort is synthetic.
    """

    fold: int
    num_folds: int
    studies: Sequence[Study]
    splits: Mapping[str, np.ndarray]
    problems: Sequence[Problem]
    assignment: Mapping[str, int]
    split_info: Mapping[str, str]
    manifest: Path
    is_phantom: bool

    def count(self, split: str) -> int:
        """Studies in ``split`` (0 for a split this fold has not got)."""
        return len(self.splits.get(split, ()))

    def ages_of(self, index: Sequence[int]) -> np.ndarray:
        """The manifest's ages (float64) of the studies at ``index``."""
        return np.array([self.studies[int(i)].age for i in index], dtype=np.float64)

    def labels_of(self, index: Sequence[int]) -> tuple[np.ndarray, list[str], list[str]]:
        """Ages, subject pseudonyms and sexes of the studies at ``index``."""
        studies = [self.studies[int(i)] for i in index]
        return (self.ages_of(index), [s.subject_id for s in studies],
                [s.sex for s in studies])

    @cached_property
    def train_mean_age(self) -> float:
        """The mean age of the training split: the baseline predicts it for everyone."""
        return float(np.mean(self.ages_of(self.splits["train"])))

    def training_summary(self) -> dict[str, Any]:
        """Counts, age range and sex ratio of the subjects the model was fitted on (no
        identities): the ``training_data`` of the model's record."""
        fit = [self.studies[int(i)] for split in ("train", "val") for i in self.splits[split]]
        ages = np.array([s.age for s in fit], dtype=float)
        return {
            "n_train": self.count("train"), "n_val": self.count("val"),
            "n_test": self.count("test"), "n_excluded": len(self.problems),
            "age_min": float(ages.min()), "age_max": float(ages.max()),
            "age_mean": float(ages.mean()), "age_sd": float(ages.std(ddof=1)) if len(ages) > 1
            else 0.0,
            "n_female": sum(s.sex == "F" for s in fit), "n_male": sum(s.sex == "M" for s in fit),
            "source": "phantom" if self.is_phantom else "manifest",
            "fold": int(self.fold), "num_folds": int(self.num_folds),
            # The baseline evaluation compares against: exactly the test fold's (metrics.json).
            "train_mean_age": self.train_mean_age, **self.split_info,
        }
