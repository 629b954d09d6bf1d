"""Results callback: calibration of the predicted age distributions and the age gap.

After testing, the tested weights are run once more over the inner-validation and test splits
(raw outputs are needed: logits for temperature scaling and distribution quantiles). Everything
fitted (temperature, gap correction) sees inner-validation data only; test labels are used
only to score. Writes ``calibration.json``, ``age_gap.csv`` and ``reliability.png`` and adds
the headline numbers to the run's results (``metrics.json``).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from bone_age.evaluation import calibration as cal
from bone_age.evaluation.metrics import exact
from bone_age.evaluation.plots import reliability_plot
from bone_age.losses import AgeLoss, age_to_class, class_ages
from bone_age.training.results import ResultsCallback, RunResults


class CalibrationWriter(ResultsCallback):
    """Coverage of the nominal intervals, reliability plot, temperature, age gaps."""

    def __init__(self, output_dir: str, temperature: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.temperature = temperature
        self.summary: dict[str, Any] = {}

    def add_results(self, results: RunResults, trainer: pl.Trainer,
                    pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        hook = dm.on_after_batch_transfer
        # Plain loaders (no distributed sampler): rank 0 sees every study of both splits.
        val = {k: v.numpy() for k, v in
               pl_module.predict_outputs(dm.loader("val"), hook).items()}
        test = {k: v.numpy() for k, v in
                pl_module.predict_outputs(dm.loader("test"), hook).items()}
        for part in (val, test):  # the manifest's float64 ages, as in predictions.csv
            part["age"] = dm.ages_of(part["index"])
        self.summary = self.evaluate(pl_module.loss, val, test)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "calibration.json").write_text(json.dumps(self.summary, indent=2))
        self._write_gaps(dm, test)
        if "reliability" in self.summary:
            results.figures["reliability"] = reliability_plot(
                self.summary["reliability"], self.output_dir / "reliability.png")
        results.add(self.headline())

    def evaluate(
        self, loss: AgeLoss, val: dict[str, np.ndarray], test: dict[str, np.ndarray]
    ) -> dict:
        """All numbers of the run; ``val``/``test`` hold raw ``outputs``, ``age``, ``index``."""
        to_np = _predict(loss)
        val_pred, _ = to_np(val["outputs"])
        test_pred, test_sd = to_np(test["outputs"])
        age = test["age"]
        fit = cal.fit_gap_correction(val["age"], val_pred)
        gap = test_pred - age
        corrected = fit.corrected_gap(test_pred, age)
        test["pred_age"], test["gap"], test["gap_corrected"] = test_pred, gap, corrected
        out: dict[str, Any] = {
            "n_val": len(val["age"]), "n_test": len(age),
            "gap_mean": float(gap.mean()), "gap_r_age": cal.correlation(gap, age),
            "gap_corrected_mean": float(corrected.mean()),
            "gap_corrected_r_age": cal.correlation(corrected, age),
            "gap_corrected_mae": float(np.abs(corrected).mean()),
            "gap_correction": {"intercept": fit.intercept, "slope": fit.slope,
                               "fitted_on": "inner-validation"},
        }
        if not loss.predicts_distribution:
            return out  # no intervals without a predicted distribution
        ages = class_ages(loss.min_age, loss.max_age).numpy().astype(float)
        probs, mean, sd = cal.scaled_moments(test["outputs"], ages)
        rel = {"level": list(cal.LEVELS),
               "normal": list(cal.normal_coverage(age, mean, sd).values()),
               "quantile": list(cal.distribution_coverage(age, probs, ages).values())}
        out.update(cov50=_at(rel, "normal", 0.5), cov90=_at(rel, "normal", 0.9),
                   cov50_q=_at(rel, "quantile", 0.5), cov90_q=_at(rel, "quantile", 0.9),
                   mean_sd=float(sd.mean()))
        if self.temperature:
            import torch

            labels = age_to_class(torch.as_tensor(val["age"]), loss.min_age, loss.max_age).numpy()
            t = cal.fit_temperature(val["outputs"], labels)
            probs_t, mean_t, sd_t = cal.scaled_moments(test["outputs"], ages, t)
            rel["normal_T"] = list(cal.normal_coverage(age, mean_t, sd_t).values())
            rel["quantile_T"] = list(cal.distribution_coverage(age, probs_t, ages).values())
            out.update(temperature=t, cov50_T=_at(rel, "normal_T", 0.5),
                       cov90_T=_at(rel, "normal_T", 0.9), mean_sd_T=float(sd_t.mean()),
                       mae_T=float(np.abs(mean_t - age).mean()))
        out["reliability"] = rel
        return out

    def _write_gaps(self, dm, test: dict[str, np.ndarray]) -> None:
        with (self.output_dir / "age_gap.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subject_id", "sex", "age", "pred_age", "gap", "gap_corrected"])
            for i, index in enumerate(test["index"]):
                study = dm.studies[int(index)]  # pseudonym only, as in predictions.csv
                w.writerow([study.subject_id, study.sex, exact(study.age),
                            exact(test["pred_age"][i]), exact(test["gap"][i]),
                            exact(test["gap_corrected"][i])])

    def headline(self) -> dict[str, Any]:
        """The summary's numbers for metrics.json (coverage keys prefixed ``calib_``)."""
        return {f"calib_{k}" if k.startswith(("cov", "mean_sd")) else k: v
                for k, v in self.summary.items()
                if not isinstance(v, dict) and k not in ("n_val", "n_test")}


def _predict(loss):
    import torch

    def run(outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        pred, sd = loss.predict(torch.as_tensor(outputs))
        return pred.numpy().astype(float), None if sd is None else sd.numpy().astype(float)

    return run


def _at(rel: dict, key: str, level: float) -> float:
    return rel[key][[round(x, 3) for x in rel["level"]].index(level)]
