"""Subject-level cross-validation folds, stratified by age band and sex, that stay put.

Each subject's place is a function of the subject and the split seed: within its stratum
(ten-year age band x sex), subjects are ordered by a hash of (seed, subject id) and cut into
``num_folds`` equal runs. Adding or removing subjects therefore moves only them and, in their
strata, the few subjects at the edges of the runs; a hospital cohort can grow and be cleaned
and its published folds survive. (scikit-learn's shuffled ``StratifiedGroupKFold``, used before
2026-12-04, reshuffles every subject when one row changes; hence this small hand-written rule.)
The inner validation split is cut the same way from a fold's training subjects, with the next
seed. A saved assignment (``folds.csv``, subject_id -> fold) can be given back instead.

Folds are drawn once per cohort: over every subject the manifest names (``read_cohort``), not
over the studies one model can use. Which studies a run then leaves out (unreadable or missing
files, a view the model reads, ages outside its class range) decides only whether that study is
used, never where anyone else goes. Subjects whose age or sex is missing or unusable still hold
their place, in strata of their own ("age unknown", "sex unknown"), so fixing or blanking one
label does not take a subject out of the cohort.
"""

from __future__ import annotations

import csv
import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from bone_age.utils.errors import BoneAgeError
from bone_age.utils.files import regular_file
from bone_age.utils.tables import write_csv

AGE_BAND_YEARS = 10
FOLDS_FILE = "folds.csv"
FOLD_TEXT = re.compile(r"[0-9]{1,6}")  # a fold number as folds.csv holds it
MAX_LINE_CHARS = 2**16  # a folds.csv line: a pseudonym and a fold number


def strata(ages: Sequence[float | None], sexes: Sequence[str | None]) -> np.ndarray:
    """Stratum label per subject: fixed ten-year age band x sex (fixed bands, not quantiles of
    the cohort, so that no subject changes stratum when others come or go).

    An unknown age (None or NaN) is a band of its own, an unknown sex (not F or M) a sex of its
    own.
    """
    band = np.array([-1 if a is None or not math.isfinite(a) else int(a // AGE_BAND_YEARS)
                     for a in ages])
    sex = np.array([{"F": 0, "M": 1}.get(s, 2) for s in sexes])
    return band * 3 + sex


def _rank_key(subject: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{subject}".encode(), digest_size=16).digest()


def stable_blocks(labels: np.ndarray, subjects: Sequence[str], n_blocks: int, seed: int,
                  rotate: bool = True) -> np.ndarray:
    """Block 0..n_blocks-1 of each entry: in each stratum, subjects ordered by the hash of
    (seed, subject) and cut into ``n_blocks`` runs whose sizes differ by at most one; with
    ``rotate`` the runs' numbering is turned by a hash of (seed, stratum), so that small strata
    do not all start in block 0 (without it, every stratum's first subject is in block 0).
    Entries of one subject share its block (and the stratum of its first entry). Where no
    stratum holds ``n_blocks`` subjects, all are one stratum (too few to stratify)."""
    subjects = [str(s) for s in subjects]
    first: dict[str, int] = {}
    for i, s in enumerate(subjects):
        first.setdefault(s, int(labels[i]))
    by_stratum: dict[int, list[str]] = {}
    for s, label in first.items():
        by_stratum.setdefault(label, []).append(s)
    if max(map(len, by_stratum.values()), default=0) < n_blocks:
        by_stratum = {0: list(first)}
    block: dict[str, int] = {}
    for label, members in by_stratum.items():
        members.sort(key=lambda s: _rank_key(s, seed))
        n = len(members)
        turn = int.from_bytes(_rank_key(f"stratum {label}", seed), "big") if rotate else 0
        block.update({s: (r * n_blocks // n + turn) % n_blocks for r, s in enumerate(members)})
    return np.array([block[s] for s in subjects], dtype=int)


def fold_assignment(ages: Sequence[float | None], sexes: Sequence[str | None],
                    subjects: Sequence[str], num_folds: int = 5, seed: int = 0) -> dict[str, int]:
    """Each subject's test fold (what ``folds.csv`` holds)."""
    blocks = stable_blocks(strata(ages, sexes), subjects, num_folds, seed)
    return {str(s): int(b) for s, b in zip(subjects, blocks, strict=True)}


def write_folds(path: Path, assignment: dict[str, int]) -> Path:
    """``folds.csv``: subject_id, fold (pseudonyms only, as the manifest names them)."""
    return write_csv(path, ["subject_id", "fold"], sorted(assignment.items()))


class _LongLine(BoneAgeError, ValueError):
    """A folds file line past the bound (caught here and named with its file and line)."""


def _bounded_lines(f: TextIO, limit: int) -> Iterator[str]:
    """``f``'s lines, each read with a bound: a file with no newline in a gigabyte (a sparse
    file, a binary) ends at the first ``limit`` characters instead of being read whole."""
    while line := f.readline(limit + 1):
        if len(line) > limit:
            raise _LongLine(f"a line longer than {limit:,} characters")
        yield line


def _shown(text: str) -> str:
    """``repr`` of a field, cut to a readable length for the one-line message."""
    return repr(text) if len(text) <= 40 else repr(text[:40]) + f"... ({len(text):,} characters)"


def read_folds(path: Path, num_folds: int) -> dict[str, int]:
    """A saved assignment; ValueError naming the file, line and field that is wrong."""
    regular_file(path, "data.folds_file", ValueError)  # a FIFO would block the run
    line = 1
    try:
        with Path(path).open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(_bounded_lines(f, MAX_LINE_CHARS))
            if not {"subject_id", "fold"} <= set(reader.fieldnames or []):
                raise ValueError(f"{path}: data.folds_file needs columns subject_id and fold, "
                                 f"has {', '.join(reader.fieldnames or []) or 'none'}")
            out: dict[str, int] = {}
            for row in reader:
                line = reader.line_num
                subject, text = (row["subject_id"] or "").strip(), (row["fold"] or "").strip()
                if not subject:
                    raise ValueError(f"{path}, line {line}: empty subject_id")
                # ASCII digits only: str.isdigit takes '²' and '٣', which int() refuses or
                # reads; a few digits only: int() refuses over 4,300.
                if not FOLD_TEXT.fullmatch(text) or int(text) >= num_folds:
                    raise ValueError(f"{path}, line {line}: fold {_shown(text)} is not in "
                                     f"0..{num_folds - 1} (data.num_folds={num_folds})")
                if subject in out and out[subject] != int(text):
                    raise ValueError(f"{path}, line {line}: subject {_shown(subject)} given "
                                     "two folds")
                out[subject] = int(text)
                line += 1
    except (csv.Error, _LongLine) as err:  # a field over csv's limit, a huge or sparse file
        raise ValueError(f"{path}, line {line}: data.folds_file is not a subject_id,fold "
                         f"table ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: data.folds_file cannot be read ({err})") from None
    return out


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
    """Train and inner-validation indices (into ``subjects``) of a fold's training subjects:
    the first of round(1 / val_fraction) runs of each stratum (at least one subject a stratum,
    so a small cohort gets a larger inner split rather than an error)."""
    n_inner = max(2, round(1 / val_fraction))
    val = stable_blocks(labels, subjects, n_inner, seed + 1, rotate=False) == 0
    return np.flatnonzero(~val), np.flatnonzero(val)


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

    Every subject is in exactly one part (its entries together); the inner validation split is
    drawn from the training folds only, so the test fold never influences training. Both splits
    are a function of the arguments alone: pass the whole cohort (``read_cohort``), then drop
    the subjects a run cannot use from their parts.
    """
    check_fold_settings(fold, num_folds, val_fraction)
    labels = strata(ages, sexes)
    subjects = np.asarray(subjects)
    if len(np.unique(subjects)) < num_folds:
        raise ValueError(f"{len(np.unique(subjects))} subjects cannot fill {num_folds} folds")
    return parts_of_fold(labels, subjects, stable_blocks(labels, subjects, num_folds, seed),
                         fold, val_fraction, seed)


def parts_of_fold(labels: np.ndarray, subjects: np.ndarray, fold_of: np.ndarray, fold: int,
                  val_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Train, inner-validation and test indices given each entry's fold (``fold_of``; -1: in
    no fold, e.g. a subject a saved assignment does not name: in no part)."""
    test = np.flatnonzero(fold_of == fold)
    train_val = np.flatnonzero((fold_of != fold) & (fold_of >= 0))
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


def assigned_fold_parts(
    ages: Sequence[float | None],
    sexes: Sequence[str | None],
    subjects: Sequence[str],
    assignment: dict[str, int],
    fold: int,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, str]:
    """``fold_parts`` under a saved assignment (``read_folds``): a subject it does not name
    has part ``"no_fold"`` (never trained or tested on: reported); the inner validation split
    is cut as usual from the other folds' subjects."""
    subjects_arr = np.asarray([str(s) for s in subjects])
    fold_of = np.array([assignment.get(s, -1) for s in subjects_arr])
    splits = parts_of_fold(strata(ages, sexes), subjects_arr, fold_of, fold, val_fraction, seed)
    parts = {s: "no_fold" for s in subjects_arr}
    parts.update({subjects_arr[int(i)]: part for part, index in splits.items() for i in index})
    return parts


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
