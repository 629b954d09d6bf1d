"""The accuracy figures of Table 1, computed one way everywhere (torchmetrics)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torchmetrics.functional import mean_absolute_error, pearson_corrcoef


def age_metrics(pred, age) -> dict[str, float]:
    """MAE, the SD of the absolute errors (the paper's "MAE (SD)") and Pearson r, in years.

    r is NaN where it is undefined (fewer than two studies, or constant predictions).
    """
    pred = torch.as_tensor(np.asarray(pred, dtype=np.float64))
    age = torch.as_tensor(np.asarray(age, dtype=np.float64))
    abs_err = (pred - age).abs()
    defined = len(pred) > 1 and bool(pred.std() > 0) and bool(age.std() > 0)
    return {
        "mae": float(mean_absolute_error(pred, age)),
        "mae_sd": float(abs_err.std()) if len(abs_err) > 1 else 0.0,
        "pearson_r": float(pearson_corrcoef(pred, age)) if defined else math.nan,
    }


def baseline_mae(age, train_mean_age: float) -> float:
    """MAE of always predicting the training folds' mean age (the table's baseline), float64."""
    return float(np.mean(np.abs(np.asarray(age, dtype=np.float64) - float(train_mean_age))))


def exact(value: float) -> str:
    """A number as text that reads back as the same float64 (a float32 value is exact in it), so
    every figure can be recomputed from the files that hold the values."""
    return repr(float(value))
