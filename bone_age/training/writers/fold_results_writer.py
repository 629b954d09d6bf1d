"""Results writer: the test fold's metrics, predictions.csv, excluded.csv, history.csv,
folds.csv (the cohort's fold assignment) and figures (scatter, Bland-Altman, error by group,
learning curves)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bone_age.data.folds import FOLDS_FILE, write_folds
from bone_age.evaluation import plots
from bone_age.evaluation.results import (
    accuracy,
    figure_title,
    prediction_table,
    write_csv,
    write_figures,
)
from bone_age.phantom.source import phantom_yardsticks
from bone_age.training.callbacks.fit_record import HISTORY_KEYS
from bone_age.training.run_results import FittedRun, RunResults


class FoldResultsWriter:
    """The run's test metrics, and its result files and figures in ``output_dir``.

    Only rank 0 writes; the module has gathered the test predictions of all ranks already.
    The learning curves come from the epochs' metrics the run collected itself (``FitRecord``),
    so they exist whichever logger (or none) is configured. Patient identity never reaches these
    files: subjects appear by their manifest pseudonym.

    Args:
        output_dir: the run's folder.
        run_info: the run's identity (model, backbone, loss, fold, seed, ...), first in
            metrics.json and in the figures' titles.
    """

    def __init__(self, output_dir: str, run_info: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.run_info = dict(run_info or {})

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        test, facts = run.evaluation.test, run.facts
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            **self.run_info,
            **facts.split_info,
            "n_train": facts.count("train"),
            "n_val": len(run.evaluation.val),
            "n_test": len(test),
            **accuracy(test.pred_age, test.age, facts.train_mean_age),
            "num_params": run.num_params,
            "best_epoch": run.best_epoch,
            "epochs": run.epochs,
            "train_seconds": round(run.train_seconds, 1),
            **run.timing,
            "n_excluded": len(facts.problems),
            **phantom_yardsticks(facts.manifest),  # a phantom's floor and oracle, else nothing
        }
        results.add(metrics)
        columns, rows = prediction_table(
            test.subject_id, test.sex, test.age, test.pred_age, test.pred_sd,
            extra={"fold": [self.run_info.get("fold", facts.fold)] * len(test)})
        write_csv(self.output_dir / "predictions.csv", columns, rows)
        results.tables["predictions"] = (columns, rows)
        write_csv(self.output_dir / "history.csv", ["epoch", *HISTORY_KEYS],
                  [[h.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for h in run.history])
        if facts.assignment:  # data.folds_file=<this file> gives a later run the same folds
            write_folds(self.output_dir / FOLDS_FILE, dict(facts.assignment))
        write_csv(self.output_dir / "excluded.csv", ["source", "row", "subject_id", "status",
                                                     "reason"],
                  [[p.source, p.row, p.subject_id, p.status, p.reason] for p in facts.problems])
        results.figures.update(self.write_figures(test.age, test.pred_age, test.sex,
                                                  metrics["mae"], run.history))

    def write_figures(self, age: np.ndarray, pred: np.ndarray, sex: list[str], mae: float,
                      history: list[dict[str, float]]) -> dict[str, Path]:
        """The test fold's figures, and the learning curves where epochs were recorded."""
        title = figure_title(self.run_info, f"fold {self.run_info.get('fold', '')}")
        figures = write_figures(self.output_dir, age, pred, sex, mae, title)
        if history:
            figures["learning_curves"] = plots.learning_curves_plot(
                history, self.output_dir / "learning_curves.png", f"Learning curves, {title}")
        return figures
