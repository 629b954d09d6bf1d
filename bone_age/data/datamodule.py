"""The LightningDataModule of one cross-validation fold of a manifest cohort."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bone_age.data.cache import StudyCache
from bone_age.data.folds import check_fold_settings, fold_parts
from bone_age.data.manifest import Problem, Study, read_cohort, read_manifest
from bone_age.data.preprocess import Preprocess
from bone_age.data.samplers import EpochShuffleSampler, ResumableLoader, step_seed_of
from bone_age.data.sources import CohortSource, ManifestSource
from bone_age.data.transforms import BatchAugment, CountNormalize
from bone_age.utils.errors import BoneAgeError

log = logging.getLogger(__name__)

# Keys of the ``data`` config node that its nested nodes read (see ``from_config``).
USER_KEYS = ("manifest", "subjects", "phantom_dir", "phantom_options", "image_size", "resize",
             "mirror_posterior", "normalize", "percentile")


class DataError(BoneAgeError, ValueError):
    """The cohort cannot be trained on as configured (the message lists why)."""


def loader_workers(num_workers: int | str) -> int:
    """``data.num_workers``: a count, or ``auto`` = one per core left to this process, at most 8.

    Cores are those this process may run on (a SLURM or container allocation), not the host's.
    """
    if num_workers == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
        return max(0, min(8, cores - 1))
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"data.num_workers must be a count >= 0 or 'auto', got {num_workers!r}")
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

    Args:
        source: where the cohort's manifest comes from (``ManifestSource`` or ``PhantomSource``).
        preprocess: study -> (views, H, W) count images, done once per study into the cache.
        normalization: counts -> network input, done per batch on the training device.
        augment: batch augmentation on the device (training batches only).
        fold, num_folds, val_fraction, seed: the subject-level, stratified cross-validation.
        views: 1 (anterior) or 2 (anterior + posterior).
        age_range: the ages a model can learn (the loss's class range); others are excluded.
        strict: stop at the first unusable study instead of leaving it out with its reason.
        cache_dir, cache_workers, progress: the preprocessed cache and its building.
        batch_size, num_workers, pin_memory: the loaders (``batch_size`` is the global batch).
    """

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
    ) -> None:
        super().__init__()
        try:
            check_fold_settings(fold, num_folds, val_fraction)
        except ValueError as err:
            raise DataError(str(err)) from None
        self.source = source
        self.fold, self.num_folds = fold, num_folds
        self.val_fraction, self.seed = val_fraction, seed
        self.view_names = ("anterior", "posterior")[:views]
        self.cache = StudyCache(cache_dir, preprocess or Preprocess(), self.view_names)
        self.normalize = normalization or CountNormalize()
        self.augment = augment or BatchAugment(enabled=False)
        self.age_range = tuple(age_range)
        self.strict = strict
        self.batch_size, self.progress, self.pin_memory = batch_size, progress, pin_memory
        self.num_workers = loader_workers(num_workers)
        self.cache_workers = (os.cpu_count() or 1) if cache_workers is None else cache_workers
        self.studies: list[Study] = []
        self.problems: list[Problem] = []
        self.splits: dict[str, np.ndarray] = {}

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
        low, high = self.age_range
        usable = []
        for study, key in zip(studies, keys, strict=True):
            if study.subject_id in bad:
                continue
            if study.age is None:
                problems.append(Problem("manifest", study.row, study.subject_id, "no_age",
                                        "no age: can be predicted, not trained or tested on"))
            elif not low - 0.5 <= study.age <= high + 0.5:
                problems.append(Problem("manifest", study.row, study.subject_id, "age_range",
                                        f"age {study.age:g} outside the model's {low}-{high}"))
            else:
                usable.append((study, self.cache.entry(key)))
        if problems:
            listing = "\n".join(f"  {p}" for p in problems)
            if self.strict:
                raise DataError(f"{len(problems)} studies cannot be used:\n{listing}")
            log.warning("leaving out %d studies (listed in excluded.csv):\n%s",
                        len(problems), listing)
        if len(usable) < 2 * self.num_folds:
            raise DataError(f"{path}: only {len(usable)} usable studies for "
                            f"{self.num_folds}-fold cross-validation")
        # Parts are drawn over the manifest's whole cohort and the unusable studies leave theirs
        # afterwards: every model (one view or two, any age range) tests the same subjects.
        cohort = read_cohort(path)
        try:
            part_of = fold_parts(
                [m.age for m in cohort], [m.sex for m in cohort], [m.subject_id for m in cohort],
                self.fold, self.num_folds, self.val_fraction, self.seed,
            )
        except ValueError as err:
            raise DataError(f"{path}: {err}") from None
        self.studies = [s for s, _ in usable]
        self.entries = [e for _, e in usable]
        self.problems = problems
        parts = np.array([part_of[s.subject_id] for s in self.studies])
        self.splits = {part: np.flatnonzero(parts == part) for part in ("train", "val", "test")}
        empty = [part for part, index in self.splits.items() if len(index) == 0]
        if empty:
            raise DataError(f"{path}: no usable study left in the {' and '.join(empty)} part(s) "
                            f"of fold {self.fold}")

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

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """Augment (training only) and normalise whole batches on the training device."""
        counts = batch["image"]
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

    # -- facts about the fold, for the results --------------------------------------------
    def ages(self, split: str) -> np.ndarray:
        return self.ages_of(self.splits[split])

    def ages_of(self, index: Sequence[int]) -> np.ndarray:
        """The manifest's ages (float64) of the studies at ``index``."""
        return np.array([self.studies[int(i)].age for i in index], dtype=np.float64)
