"""The LightningDataModule of one cross-validation fold of a manifest cohort."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bone_age.data.cache import StudyCache
from bone_age.data.fold_facts import FoldFacts
from bone_age.data.folds import (
    assigned_fold_parts,
    check_fold_settings,
    check_split,
    fold_assignment,
    fold_parts,
    read_folds,
    site_fold_parts,
    site_order,
)
from bone_age.data.labels import trainable_age
from bone_age.data.manifest import (
    SITE_COLUMN,
    Problem,
    Study,
    manifest_columns,
    read_cohort,
    read_manifest,
)
from bone_age.data.preprocess import Preprocess
from bone_age.data.samplers import EpochShuffleSampler, ResumableLoader, step_seed_of
from bone_age.data.sources import CohortSource, ManifestSource
from bone_age.data.transforms import BatchAugment, CountNormalize
from bone_age.utils.config_keys import key_problem
from bone_age.utils.cores import usable_cores
from bone_age.utils.errors import BoneAgeError

log = logging.getLogger(__name__)

# Keys of the ``data`` config node that its nested nodes read (see ``from_config``).
USER_KEYS = ("manifest", "subjects", "cohort_seed", "phantom_dir", "phantom_options",
             "image_size", "resize", "mirror_posterior", "normalize", "percentile")


class DataError(BoneAgeError, ValueError):
    """The cohort cannot be trained on as configured (the message lists why)."""


def loader_workers(num_workers: int | str) -> int:
    """``data.num_workers``: a count, or ``auto`` = one per core left to this process, at most 8.

    Cores are those this process may run on (a SLURM or container allocation), not the host's.
    """
    if num_workers == "auto":
        return max(0, min(8, usable_cores() - 1))
    problem = key_problem("data.num_workers", num_workers)  # the settings check's own rule
    if problem:
        raise DataError(problem)
    return num_workers


class CachedStudies(Dataset):
    """Studies read from the preprocessed cache: count images, age, sex and manifest index."""

    def __init__(self, entries: Sequence[Path], studies: Sequence[Study], index: np.ndarray):
        self.entries, self.studies, self.index = entries, studies, index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        study = self.studies[j]
        age = float("nan") if study.age is None else study.age
        return {
            "image": torch.from_numpy(np.load(self.entries[j])),
            "age": torch.tensor(age, dtype=torch.float32),
            "sex": torch.tensor(study.is_male),
            "index": torch.tensor(j),
        }


class BoneAgeDataModule(pl.LightningDataModule):
    """Fold ``fold`` of ``num_folds`` of a cohort: its splits, cache and batches.

    Testing is the run's one evaluation pass over ``evaluation_splits``: the inner-validation
    split (what calibration is fitted on) and the test fold (what is scored).

    Args:
        source: where the cohort's manifest comes from (``ManifestSource`` or ``PhantomSource``).
        preprocess: study -> (views, H, W) count images, done once per study into the cache.
        normalization: counts -> network input, done per batch on the training device.
        augment: batch augmentation on the device (training batches only).
        fold, num_folds, val_fraction: the subject-level, stratified cross-validation.
        seed: the data order (shuffling, augmentation draws).
        split_seed: the folds and inner validation split (None: ``seed``), apart from ``seed``
            so that a repeat with another seed tests the same subjects.
        folds_file: a saved assignment (``folds.csv`` of an earlier run: subject_id, fold) to
            use instead of drawing the folds; subjects it does not name are left out, reported.
        split: ``stratified`` (folds by age band and sex) or ``site`` (leave-one-site-out over
            the manifest's ``site`` column: fold k tests the k-th site, ``num_folds`` becomes
            the number of sites).
        views: 1 (anterior) or 2 (anterior + posterior).
        age_range: the ages a model can learn (the loss's class range); others are excluded.
        strict: stop at the first unusable study instead of leaving it out with its reason.
        cache_dir, cache_workers, progress: the preprocessed cache and its building.
        batch_size, num_workers, pin_memory: the loaders (``batch_size`` is the global batch).
    """

    evaluation_splits: tuple[str, ...] = ("val", "test")

    def __init__(
        self,
        source: CohortSource,
        preprocess: Preprocess | None = None,
        normalization: CountNormalize | None = None,
        augment: BatchAugment | None = None,
        fold: int = 0,
        num_folds: int = 5,
        val_fraction: float = 0.1,
        seed: int = 0,
        views: int = 2,
        age_range: Sequence[int] = (40, 80),
        strict: bool = False,
        cache_dir: str = "data/cache",
        cache_workers: int | None = None,
        progress: bool = True,
        batch_size: int = 64,
        num_workers: int | str = 0,
        pin_memory: bool = False,
        split: str = "stratified",
        split_seed: int | None = None,
        folds_file: str | None = None,
    ) -> None:
        super().__init__()
        try:
            check_split(split)
            # Leave-one-site-out has one fold per site: checked once the sites are read.
            check_fold_settings(fold, num_folds if split == "stratified" else fold + 2,
                                val_fraction)
        except ValueError as err:
            raise DataError(str(err)) from None
        self.split = split
        self.test_site = ""
        self.source = source
        self.fold, self.num_folds = fold, num_folds
        self.val_fraction, self.seed = val_fraction, seed
        self.split_seed = seed if split_seed is None else split_seed
        self.folds_file = folds_file
        self.fold_of: dict[str, int] = {}  # the cohort's assignment, subject -> test fold
        self.view_names = ("anterior", "posterior")[:views]
        self.cache = StudyCache(cache_dir, preprocess or Preprocess(), self.view_names)
        self.normalize = normalization or CountNormalize()
        self.augment = augment or BatchAugment(enabled=False)
        self.age_range = tuple(age_range)
        self.strict = strict
        self.batch_size, self.progress, self.pin_memory = batch_size, progress, pin_memory
        self.num_workers = loader_workers(num_workers)
        self.cache_workers = usable_cores() if cache_workers is None else cache_workers
        self.studies: list[Study] = []
        self.problems: list[Problem] = []
        self.splits: dict[str, np.ndarray] = {}
        self._facts: FoldFacts | None = None

    @classmethod
    def from_config(cls, **node) -> BoneAgeDataModule:
        """Hydra's entry (``conf/data``): the keys users set (``data.manifest``,
        ``data.subjects``, ``data.image_size``, ...) stay at the top of the ``data`` node, where
        the nested ``source``, ``preprocess`` and ``normalization`` nodes read them; they are not
        arguments of the data module and are dropped here."""
        if node.get("manifest") is not None and not isinstance(node["source"], ManifestSource):
            raise DataError("data.manifest is set but the cohort source is the phantom: add "
                            "data=manifest to train on a manifest")
        for key in USER_KEYS:
            node.pop(key, None)
        return cls(**node)

    def manifest_path(self, generate: bool = False) -> Path:
        """The cohort's manifest; ``generate``: write the phantom first if it needs one."""
        return self.source.manifest_path(generate)

    # -- Lightning hooks -----------------------------------------------------------------
    def prepare_data(self) -> None:
        """Runs once per node: generate the phantom if needed and fill the cache."""
        studies, _ = read_manifest(self.manifest_path(generate=True))
        self.cache.build(studies, self.cache_workers, self.progress)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        path = self.manifest_path()
        studies, problems = read_manifest(path)
        keys = self.cache.build(studies, self.cache_workers, self.progress)
        unreadable = self.cache.problems(studies, keys)
        bad = {p.subject_id for p in unreadable}
        problems += unreadable
        usable = []
        for study, key in zip(studies, keys, strict=True):
            if study.subject_id in bad:
                continue
            if study.age is None:
                problems.append(Problem("manifest", study.row, study.subject_id, "no_age",
                                        "no age: can be predicted, not trained or tested on"))
            elif not trainable_age(study.age, self.age_range):
                low, high = self.age_range
                problems.append(Problem("manifest", study.row, study.subject_id, "age_range",
                                        f"age {study.age:g} outside the model's {low}-{high}"))
            else:
                usable.append((study, self.cache.entry(key)))
        # Parts are drawn over the manifest's whole cohort and the unusable studies leave theirs
        # afterwards: every model (one view or two, any age range) tests the same subjects.
        # A subject without a site (data.split=site) or not in data.folds_file has no part:
        # reported like the rest.
        part_of = self._parts(path, read_cohort(path))
        for status, why in (("no_site", "no site: data.split=site cannot place it in a fold"),
                            ("no_fold", f"not in data.folds_file {self.folds_file}")):
            problems += [Problem("manifest", s.row, s.subject_id, status, why)
                         for s, _ in usable if part_of[s.subject_id] == status]
        usable = [(s, e) for s, e in usable if part_of[s.subject_id] not in ("no_site",
                                                                              "no_fold")]
        if problems:  # one line each way: the full list is the run's excluded.csv
            shown = "; ".join(str(p) for p in problems[:3]) + ("; ..." if len(problems) > 3
                                                               else "")
            if self.strict:
                raise DataError(f"{path}: {len(problems)} studies cannot be used (data.strict="
                                f"true): {shown}; data.strict=false leaves them out and lists "
                                "them all in the run's excluded.csv")
            log.warning("leaving out %d studies (%s); all are listed in excluded.csv",
                        len(problems), shown)
        if len(usable) < 2 * self.num_folds:
            raise DataError(f"{path}: only {len(usable)} usable studies for "
                            f"{self.num_folds}-fold cross-validation")
        self.studies = [s for s, _ in usable]
        self.entries = [e for _, e in usable]
        self.problems = problems
        parts = np.array([part_of[s.subject_id] for s in self.studies])
        self.splits = {part: np.flatnonzero(parts == part) for part in ("train", "val", "test")}
        empty = [part for part, index in self.splits.items() if len(index) == 0]
        if empty:
            raise DataError(f"{path}: no usable study left in the {' and '.join(empty)} part(s) "
                            f"of fold {self.fold}")

    def _parts(self, path: Path, cohort: list) -> dict[str, str]:
        """Each subject's part (train, val, test; no_site, no_fold) in this fold."""
        ages, sexes = [m.age for m in cohort], [m.sex for m in cohort]
        subjects = [m.subject_id for m in cohort]
        if self.split == "stratified" and self.folds_file:
            try:
                saved = read_folds(Path(self.folds_file), self.num_folds)
            except ValueError as err:
                raise DataError(str(err)) from None
            self.fold_of = {s: saved[s] for s in subjects if s in saved}
            return assigned_fold_parts(ages, sexes, subjects, saved, self.fold,
                                       self.val_fraction, self.split_seed)
        try:
            if self.split == "stratified":
                self.fold_of = fold_assignment(ages, sexes, subjects, self.num_folds,
                                               self.split_seed)
                return fold_parts(ages, sexes, subjects, self.fold, self.num_folds,
                                  self.val_fraction, self.split_seed)
            if SITE_COLUMN not in manifest_columns(path):
                raise ValueError(f"data.split=site needs a {SITE_COLUMN} column; the manifest "
                                 "has none (python -m bone_age.index writes one)")
            sites = [m.site for m in cohort]
            parts = site_fold_parts(ages, sexes, subjects, sites, self.fold,
                                    self.val_fraction, self.split_seed)
        except ValueError as err:
            raise DataError(f"{path}: {err}") from None
        order = site_order(sites)
        self.num_folds, self.test_site = len(order), order[self.fold]
        self.fold_of = {s: order.index(site) for s, site in zip(subjects, sites, strict=True)
                        if site}
        return parts

    def loader(self, split: str, train: bool = False) -> DataLoader:
        """Batches of ``split`` (train, val or test); ``train``: the resumable shuffled order.

        Without a distributed sampler: the training loops get theirs from Lightning, and a
        caller on one rank (post-hoc calibration) sees every study of the split.
        """
        dataset = CachedStudies(self.entries, self.studies, self.splits[split])
        # data.batch_size is the global batch: DDP splits it over the processes.
        world = self.trainer.world_size if self.trainer is not None else 1
        batch_size = max(1, self.batch_size // world)
        options = dict(batch_size=batch_size, num_workers=self.num_workers,
                       persistent_workers=self.num_workers > 0, pin_memory=self.pin_memory)
        if not train:
            return DataLoader(dataset, **options)
        return ResumableLoader(
            dataset, sampler=EpochShuffleSampler(len(dataset), self.seed),
            drop_last=len(dataset) > batch_size, progress=self._batches_done_this_epoch, **options,
        )

    def _batches_done_this_epoch(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        """The evaluation pass: one loader per split of ``evaluation_splits``, in that order."""
        return [self.loader(split) for split in self.evaluation_splits]

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise whole batches on the training device."""
        counts = batch["image"]
        # A DataModule is no nn.Module: Lightning moves the batch to the GPU, not these buffers.
        self.augment.to(counts.device)
        self.normalize.to(counts.device)
        if self.trainer is not None and self.trainer.training:
            # Augmentation and dropout draw from (seed, step, rank) only, so a run resumed from a
            # checkpoint replays exactly what an uninterrupted run does.
            trainer = self.trainer
            step_seed = step_seed_of(self.seed, trainer.global_step, trainer.global_rank)
            torch.manual_seed(step_seed)
            generator = torch.Generator(device=counts.device).manual_seed(step_seed)
            counts = self.augment(counts, generator)
        batch["image"] = self.normalize(counts)
        return batch

    # -- the fold's facts, for the evaluation pass, the results and the model's record --------
    @property
    def facts(self) -> FoldFacts:
        """The fold as set up (``setup`` first), gathered once: every reader sees the same."""
        if self._facts is None:
            if not self.splits:
                raise RuntimeError("the data module's facts are known once it is set up")
            self._facts = FoldFacts(
                fold=self.fold, num_folds=self.num_folds, studies=tuple(self.studies),
                splits=dict(self.splits), problems=tuple(self.problems),
                assignment=dict(self.fold_of), split_info=self._split_info(),
                manifest=self.manifest_path(), is_phantom=bool(self.source.is_phantom))
        return self._facts

    def _split_info(self) -> dict[str, str]:
        """How the test fold was chosen, for metrics.json and the model's record: nothing for
        the default stratified folds, the split and the held-out site's pseudonym for
        leave-one-site-out."""
        return {} if self.split == "stratified" else {"split": self.split,
                                                      "test_site": self.test_site}
