"""One run's results: the object that results callbacks add sections to, written once.

``train()`` makes a ``RunResults`` after the evaluation pass and hands it, with the ``FittedRun``
(that pass's outputs and the facts of the fit), in the configured order, to every callback that
is a ``ResultsCallback``; each adds its keys to ``metrics`` (and its figures and tables); then
``metrics.json`` is written once, the results go to W&B if that logger is used, and ``train()``
returns the object. No callback reads another's files or state, and none runs the network: the
results are functions of the evaluation pass's outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from bone_age.data.manifest import Problem
from bone_age.evaluation.fold_outputs import FoldEvaluation
from bone_age.utils.outputs import write_text_atomic

METRICS_FILE = "metrics.json"


@dataclass
class RunResults:
    """What a finished run reports.

    Args:
        output_dir: the run's folder.
        metrics: the content of ``metrics.json`` (flat keys, plus ``settings``).
        figures: figure name -> file, for trackers.
        tables: table name -> (columns, rows), for trackers.
    """

    output_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list[Any]]]] = field(default_factory=dict)

    def add(self, section: dict[str, Any]) -> None:
        """Add keys to ``metrics``; a key two sections both set is a bug, not an update."""
        clash = sorted(set(section) & set(self.metrics))
        if clash:
            raise KeyError(f"results: {', '.join(clash)} set twice")
        self.metrics.update(section)

    @property
    def metrics_file(self) -> Path:
        return Path(self.output_dir) / METRICS_FILE

    def write(self) -> Path:
        """``metrics.json``, whole or not at all."""
        Path(self.output_dir).mkdir(parents=True, exist_ok=True)
        return write_text_atomic(self.metrics_file,
                                 json.dumps(self.metrics, indent=2, allow_nan=True))

    @classmethod
    def read(cls, output_dir: str | Path) -> RunResults:
        """A finished run's results, from its ``metrics.json`` (ValueError/OSError if unusable)."""
        path = Path(output_dir) / METRICS_FILE
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError(f"holds a {type(metrics).__name__}")
        return cls(Path(output_dir), metrics)


@dataclass(frozen=True)
class FittedRun:
    """What the results callbacks are given: the evaluation pass and the facts of the fit.

    Args:
        evaluation: the tested weights' outputs on the inner-validation and test splits.
        fold: the tested fold.
        n_train: studies of the training split.
        train_mean_age: their mean age (the baseline predicts it for everyone).
        split_info: how the test fold was chosen (empty for stratified folds).
        problems: the studies left out, with their reasons.
        manifest: the cohort's manifest.
        num_params: the network's parameters.
        best_epoch, epochs: the tested epoch, counted from 1 as the log does (0: none), and the
            epochs run.
        tested_checkpoint: the checkpoint whose weights were tested (None: the final weights).
        timing: seconds of the run's phases (``setup_seconds``, ``evaluation_seconds``).
        folds: the cohort's fold assignment (subject_id -> test fold), for ``folds.csv``.
    """

    evaluation: FoldEvaluation
    fold: int
    n_train: int
    train_mean_age: float
    split_info: dict[str, str]
    problems: list[Problem]
    manifest: Path
    num_params: int
    best_epoch: int
    epochs: int
    tested_checkpoint: Path | None
    timing: dict[str, float] = field(default_factory=dict)
    folds: dict[str, int] = field(default_factory=dict)


class ResultsCallback(pl.Callback):
    """A callback that contributes a section to the run's results after testing (rank 0)."""

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        raise NotImplementedError
