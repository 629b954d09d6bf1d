"""Results callback: the test fold's metrics, predictions.csv, excluded.csv, history.csv and
figures (scatter, Bland-Altman, error by group, learning curves)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from bone_age.evaluation import plots
from bone_age.evaluation.metrics import age_metrics, baseline_mae, exact
from bone_age.models import count_parameters
from bone_age.training.results import ResultsCallback, RunResults

HISTORY_KEYS = ("train/loss", "val/loss", "val/mae")
PREDICTION_COLUMNS = ["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"]


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
            self.history.append({"epoch": trainer.current_epoch, **found})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.train_seconds = time.perf_counter() - self._fit_start

    def add_results(self, results: RunResults, trainer: pl.Trainer,
                    pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        preds = {k: v.numpy() for k, v in pl_module.test_predictions.items()}
        # The figures are computed in float64 from exactly the values predictions.csv holds: the
        # manifest's ages (not their float32 batch copies) and the predictions as predicted.
        age = dm.ages_of(preds["index"])
        pred = preds["pred_age"].astype(np.float64)
        train_mean = float(np.mean(dm.ages("train")))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metrics = {
            **self.run_info,
            "n_train": len(dm.splits["train"]),
            "n_val": len(dm.splits["val"]),
            "n_test": len(age),
            **age_metrics(pred, age),
            "train_mean_age": train_mean,
            "baseline_mae": baseline_mae(age, train_mean),
            "num_params": count_parameters(pl_module.net),
            "best_epoch": int(pl_module.best_epoch),
            "epochs": int(trainer.current_epoch),
            "train_seconds": round(self.train_seconds, 1),
            "n_excluded": len(dm.problems),
        }
        results.add(metrics)
        rows = self._prediction_rows(dm, preds)
        self._write_csv("predictions.csv", PREDICTION_COLUMNS, rows)
        results.tables["predictions"] = (PREDICTION_COLUMNS, rows)
        self._write_csv("history.csv", ["epoch", *HISTORY_KEYS],
                        [[h.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for h in self.history])
        self._write_csv("excluded.csv", ["source", "row", "subject_id", "status", "reason"],
                        [[p.source, p.row, p.subject_id, p.status, p.reason]
                         for p in dm.problems])
        sex = [dm.studies[int(i)].sex for i in preds["index"]]
        results.figures.update(self.write_figures(age, pred, sex, metrics["mae"]))

    def write_figures(self, age: np.ndarray, pred: np.ndarray, sex: list[str],
                      mae: float) -> dict[str, Path]:
        info = self.run_info
        # The trunk is named too: "multi_vgg16" with a resnet10t trunk is not the paper's VGG16.
        title = (f"{info.get('model', '')} [{info.get('backbone', '')}] + {info.get('loss', '')}, "
                 f"fold {info.get('fold', '')}")
        out = self.output_dir
        figures = {
            "scatter": plots.scatter_plot(age, pred, out / "scatter.png", title, mae),
            "bland_altman": plots.bland_altman_plot(age, pred, out / "bland_altman.png",
                                                    f"Bland-Altman, {title}"),
            "error_by_group": plots.error_by_group_plot(age, pred, sex, out / "error_by_group.png",
                                                        f"Error by age band and sex, {title}"),
        }
        if self.history:
            figures["learning_curves"] = plots.learning_curves_plot(
                self.history, out / "learning_curves.png", f"Learning curves, {title}")
        return figures

    def _prediction_rows(self, dm, preds: dict[str, np.ndarray]) -> list[list[Any]]:
        rows = []
        for i, index in enumerate(preds["index"]):
            study = dm.studies[int(index)]
            sd = preds["pred_sd"][i]
            rows.append([study.subject_id, self.run_info.get("fold", dm.fold), study.sex,
                         exact(study.age), exact(preds["pred_age"][i]),
                         "" if math.isnan(sd) else exact(sd)])
        return rows

    def _write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with (self.output_dir / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
