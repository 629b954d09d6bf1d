"""One run's results: the object that the results writers add sections to, written once.

``train()`` makes a ``RunResults`` after the evaluation pass and hands it, with the ``FittedRun``
(that pass's outputs and the facts of the fit), to each writer of the ``results`` config group
(``conf/results/``, ``bone_age.training.writers``) in the configured order; each adds its keys
to ``metrics`` (and its figures and tables) and writes its files; then ``metrics.json`` is
written once, the results go to W&B if that logger is used, and ``train()`` returns the object.
No writer reads another's files or state, and none runs the network: the results are functions
of the evaluation pass's outputs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bone_age.data.fold_facts import FoldFacts
from bone_age.evaluation.fold_outputs import FoldEvaluation
from bone_age.evaluation.run_files import MetricsFileError, read_metrics
from bone_age.utils.outputs import write_text_atomic

METRICS_FILE = "metrics.json"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finished_problem(metrics: dict[str, Any]) -> str | None:
    """Why ``metrics`` is not what a finished run writes: the figures the run summary and a
    sweep's lines print, each of its type and range (None when all are there)."""
    for key in ("mae", "baseline_mae"):
        value = metrics.get(key)
        if not _number(value) or not math.isfinite(value) or value < 0:
            return f"{key} is {value!r}, not an error in years (a number >= 0)"
    r = metrics.get("pearson_r")  # NaN where predictions are constant: undefined, not damaged
    if not _number(r) or not (math.isnan(r) or -1 <= r <= 1):
        return f"pearson_r is {r!r}, not a correlation (a number from -1 to 1)"
    n = metrics.get("n_test")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return f"n_test is {n!r}, not a count of test subjects (a whole number >= 1)"
    return None


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
        """A finished run's results, from its ``metrics.json``.

        Raises:
            MetricsFileError: not a run's metrics (``read_metrics``, the one reader, shared
                with the report) or not a finished run's figures (``finished_problem``).
            OSError: unreadable.
        """
        metrics = read_metrics(Path(output_dir) / METRICS_FILE)
        problem = finished_problem(metrics)
        if problem:
            raise MetricsFileError(f"not a finished run's: {problem}")
        return cls(Path(output_dir), metrics)


@dataclass(frozen=True)
class FittedRun:
    """What the results writers are given: the evaluation pass and the facts of the fit.

    Args:
        evaluation: the tested weights' outputs on the inner-validation and test splits.
        facts: the fold's facts, as the data module gathered them (``FoldFacts``).
        settings: the run's settings as recorded (None: the run records none).
        num_params: the network's parameters.
        best_epoch, epochs: the tested epoch, counted from 1 as the log does (0: none), and the
            epochs run.
        tested_checkpoint: the checkpoint whose weights were tested (None: the final weights).
        history: each epoch's losses and validation MAE (epochs counted from 1).
        train_seconds: the fit's wall time.
        timing: seconds of the run's phases (``setup_seconds``, ``evaluation_seconds``).
    """

    evaluation: FoldEvaluation
    facts: FoldFacts
    settings: dict[str, Any] | None
    num_params: int
    best_epoch: int
    epochs: int
    tested_checkpoint: Path | None
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    timing: dict[str, float] = field(default_factory=dict)


class ResultsWriter(Protocol):
    """A writer of the ``results`` group: adds its section to the run's results (rank 0)."""

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        """Add keys, figures and tables to ``results`` and write this writer's files."""
