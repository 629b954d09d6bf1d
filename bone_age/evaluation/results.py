"""The figures of a tested cohort, computed one way: a training run's test fold (its results
writers) and ``python -m bone_age.evaluate`` on any cohort call these same functions.

Every figure is computed in float64 from exactly the values ``predictions.csv`` holds (the
manifest's ages, the predictions as predicted), so it can be recomputed from the files.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.evaluation import plots
from bone_age.evaluation.metrics import age_metrics, baseline_mae, exact
from bone_age.utils.tables import write_csv

PREDICTION_COLUMNS = ["subject_id", "sex", "age", "pred_age", "pred_sd"]

# Predicted ages spreading less than this share of the tested ages' SD tell nobody apart: a
# model that has not learned (a tiny or short run predicts about the training mean for all).
NOT_LEARNED_SPREAD = 0.05

log = logging.getLogger(__name__)


def prediction_spread(pred: np.ndarray, age: np.ndarray) -> dict[str, Any]:
    """``pred_age_sd`` (years) and ``not_learned``: whether the predictions barely vary
    against the tested ages (a result, not an error: said in one warning line)."""
    pred_sd = float(np.std(pred)) if len(pred) > 1 else math.nan
    age_sd = float(np.std(age)) if len(age) > 1 else math.nan
    not_learned = bool(pred_sd < NOT_LEARNED_SPREAD * age_sd)  # False where undefined (NaN)
    if not_learned:
        log.warning("the predicted ages barely vary (SD %.3g y; the tested ages' SD %.3g y): "
                    "this model has not learned to tell ages apart (too short or too small a "
                    "run?); metrics.json says not_learned: true", pred_sd, age_sd)
    return {"pred_age_sd": pred_sd, "not_learned": not_learned}


def accuracy(pred: np.ndarray, age: np.ndarray, train_mean_age: float | None) -> dict[str, Any]:
    """MAE (SD), r, the predictions' spread (``prediction_spread``) and, where the training
    mean age is known, the baseline of predicting it.

    Args:
        pred: predicted ages of the studies with a known age.
        age: their chronological ages (float64).
        train_mean_age: the mean age of the model's training split (None: no baseline).
    """
    out: dict[str, Any] = dict(age_metrics(pred, age))
    out.update(prediction_spread(np.asarray(pred, dtype=np.float64),
                                 np.asarray(age, dtype=np.float64)))
    if train_mean_age is not None:
        out["train_mean_age"] = float(train_mean_age)
        out["baseline_mae"] = baseline_mae(age, train_mean_age)
    return out


def prediction_table(
    subject_ids: Sequence[str], sexes: Sequence[str], ages: Sequence[float | None],
    pred: np.ndarray, sd: np.ndarray, extra: Mapping[str, Sequence[Any]] | None = None,
) -> tuple[list[str], list[list[Any]]]:
    """The columns and rows of ``predictions.csv``: values as exact text (empty SD for a model
    without one, empty age where unknown).

    Args:
        subject_ids, sexes, ages: the studies' pseudonyms and labels.
        pred, sd: their predictions (NaN SD where the loss gives none).
        extra: columns placed after ``subject_id`` (the fold of a run, the site of a cohort).
    """
    extra = dict(extra or {})
    columns = [PREDICTION_COLUMNS[0], *extra, *PREDICTION_COLUMNS[1:]]
    rows = []
    for i, sid in enumerate(subject_ids):
        age = ages[i]
        rows.append([sid, *(values[i] for values in extra.values()), sexes[i],
                     "" if age is None else exact(age), exact(pred[i]),
                     "" if math.isnan(sd[i]) else exact(sd[i])])
    return columns, rows


def figure_title(run_info: Mapping[str, Any], cohort: str) -> str:
    """``model [trunk] + loss, cohort``: the trunk is named too ("multi_vgg16" with a resnet10t
    trunk is not the paper's VGG16)."""
    return (f"{run_info.get('model', '')} [{run_info.get('backbone', '')}] + "
            f"{run_info.get('loss', '')}, {cohort}")


def write_figures(out: Path, age: np.ndarray, pred: np.ndarray, sex: Sequence[str], mae: float,
                  title: str) -> dict[str, Path]:
    """Scatter, Bland-Altman and error by age band and sex, into ``out``."""
    return {
        "scatter": plots.scatter_plot(age, pred, out / "scatter.png", title, mae),
        "bland_altman": plots.bland_altman_plot(age, pred, out / "bland_altman.png",
                                                f"Bland-Altman, {title}"),
        "error_by_group": plots.error_by_group_plot(age, pred, sex, out / "error_by_group.png",
                                                    f"Error by age band and sex, {title}"),
    }


def write_gaps(path: Path, subject_ids: Sequence[str], sexes: Sequence[str], ages: np.ndarray,
               per_study: dict[str, np.ndarray]) -> Path:
    """``age_gap.csv``: per study (by pseudonym) its age, prediction and gaps."""
    corrected = per_study.get("gap_corrected")
    return write_csv(path, ["subject_id", "sex", "age", "pred_age", "gap", "gap_corrected"], [
        [sid, sex, exact(age), exact(per_study["pred_age"][i]), exact(per_study["gap"][i]),
         "" if corrected is None else exact(corrected[i])]
        for i, (sid, sex, age) in enumerate(zip(subject_ids, sexes, ages, strict=True))])
