"""Results callback: the test fold's metrics, predictions.csv, excluded.csv, history.csv,
folds.csv (the cohort's fold assignment) and figures (scatter, Bland-Altman, error by group,
learning curves)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

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
from bone_age.training.results import FittedRun, ResultsCallback, RunResults

HISTORY_KEYS = ("train/loss", "val/loss", "val/mae")


class ResultsWriter(ResultsCallback):
    """The run's test metrics, and its result files and figures in ``output_dir``.

    Only rank 0 writes; the module has gathered the test predictions of all ranks already.
    Epoch metrics are collected here rather than read back from a logger, so the learning
    curves exist whichever logger (or none) is configured. Patient identity never reaches these
    files: subjects appear by their manifest pseudonym.
    """

    def __init__(self, output_dir: str, run_info: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.run_info = dict(run_info or {})
        self._fit_start: float | None = None
        self.train_seconds = 0.0
        self.history: list[dict[str, float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the epoch's validation, so both losses of the epoch are in callback_metrics.
        found = {k: float(trainer.callback_metrics[k]) for k in HISTORY_KEYS
                 if k in trainer.callback_metrics}
        if found:
            self.history.append({"epoch": trainer.current_epoch + 1, **found})  # as the log counts

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.train_seconds = time.perf_counter() - self._fit_start

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        test = run.evaluation.test
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            **self.run_info,
            **run.split_info,
            "n_train": run.n_train,
            "n_val": len(run.evaluation.val),
            "n_test": len(test),
            **accuracy(test.pred_age, test.age, run.train_mean_age),
            "num_params": run.num_params,
            "best_epoch": run.best_epoch,
            "epochs": run.epochs,
            "train_seconds": round(self.train_seconds, 1),
            **run.timing,
            "n_excluded": len(run.problems),
            **phantom_yardsticks(run.manifest),  # a phantom's floor and oracle, else nothing
        }
        results.add(metrics)
        columns, rows = prediction_table(
            test.subject_id, test.sex, test.age, test.pred_age, test.pred_sd,
            extra={"fold": [self.run_info.get("fold", run.fold)] * len(test)})
        write_csv(self.output_dir / "predictions.csv", columns, rows)
        results.tables["predictions"] = (columns, rows)
        write_csv(self.output_dir / "history.csv", ["epoch", *HISTORY_KEYS],
                  [[h.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for h in self.history])
        if run.folds:  # data.folds_file=<this file> gives a later run the same folds
            write_folds(self.output_dir / FOLDS_FILE, run.folds)
        write_csv(self.output_dir / "excluded.csv", ["source", "row", "subject_id", "status",
                                                     "reason"],
                  [[p.source, p.row, p.subject_id, p.status, p.reason] for p in run.problems])
        results.figures.update(self.write_figures(test.age, test.pred_age, test.sex,
                                                  metrics["mae"]))

    def write_figures(self, age: np.ndarray, pred: np.ndarray, sex: list[str],
                      mae: float) -> dict[str, Path]:
        title = figure_title(self.run_info, f"fold {self.run_info.get('fold', '')}")
        figures = write_figures(self.output_dir, age, pred, sex, mae, title)
        if self.history:
            figures["learning_curves"] = plots.learning_curves_plot(
                self.history, self.output_dir / "learning_curves.png",
                f"Learning curves, {title}")
        return figures
