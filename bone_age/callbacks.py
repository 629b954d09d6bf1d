"""Lightning callbacks of a run: writing its results into the run directory."""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bone_age.models import count_parameters
from bone_age.plots import scatter_plot

log = logging.getLogger(__name__)


class ResultsWriter(pl.Callback):
    """Writes ``metrics.json``, ``predictions.csv``, ``excluded.csv`` and the scatter plot.

    Only rank 0 writes; the module has gathered the test predictions of all ranks already.
    Patient identity never reaches these files: subjects appear by their manifest pseudonym.
    """

    def __init__(self, output_dir: str, run_info: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.run_info = dict(run_info or {})
        self._fit_start: float | None = None
        self.train_seconds = 0.0
        self.metrics: dict = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.train_seconds = time.perf_counter() - self._fit_start

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        preds = {k: v.numpy() for k, v in pl_module.test_predictions.items()}
        age, pred = preds["age"], preds["pred_age"]
        err = np.abs(pred - age)
        train_mean = float(np.mean(dm.ages("train")))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = {
            **self.run_info,
            "n_train": len(dm.splits["train"]),
            "n_val": len(dm.splits["val"]),
            "n_test": len(age),
            "mae": float(err.mean()),
            "mae_sd": float(err.std(ddof=1)) if len(err) > 1 else 0.0,
            "pearson_r": float(np.corrcoef(pred, age)[0, 1]) if len(age) > 1 else math.nan,
            "baseline_mae": float(np.mean(np.abs(age - train_mean))),
            "num_params": count_parameters(pl_module.net),
            "best_epoch": int(pl_module.best_epoch),
            "epochs": int(trainer.current_epoch),
            "train_seconds": round(self.train_seconds, 1),
            "n_excluded": len(dm.problems),
        }
        with (self.output_dir / "metrics.json").open("w") as f:
            json.dump(self.metrics, f, indent=2)
        self._write_predictions(dm, preds)
        self._write_excluded(dm.problems)
        title = f"{self.run_info.get('model', '')} + {self.run_info.get('loss', '')}, " \
                f"fold {self.run_info.get('fold', '')}"
        scatter_plot(age, pred, self.output_dir / "scatter.png", title, self.metrics["mae"])

    def _write_predictions(self, dm, preds: dict[str, np.ndarray]) -> None:
        with (self.output_dir / "predictions.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"])
            for i, index in enumerate(preds["index"]):
                study = dm.studies[int(index)]
                sd = preds["pred_sd"][i]
                w.writerow([study.subject_id, self.run_info.get("fold", dm.fold), study.sex,
                            f"{study.age:g}", f"{preds['pred_age'][i]:.3f}",
                            "" if math.isnan(sd) else f"{sd:.3f}"])

    def _write_excluded(self, problems) -> None:
        with (self.output_dir / "excluded.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["source", "row", "subject_id", "status", "reason"])
            for p in problems:
                w.writerow([p.source, p.row, p.subject_id, p.status, p.reason])
