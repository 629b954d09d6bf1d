"""What a run's one evaluation pass gives: per split, the network's raw outputs and the ages the
loss decodes from them, decoded once.

After fitting, the tested weights run once over the inner-validation split and once over the
test split, on the run's device and at its precision. Every result of the run (predictions.csv,
metrics.json, calibration.json, age_gap.csv, the figures, the Table 1 report) is computed from
these arrays, so they all hold the same decoded ages, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from bone_age.losses import AgeLoss


def decode_outputs(loss: AgeLoss, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The loss's predicted ages and SDs (NaN where it predicts no distribution), float64.

    Decoded on the CPU from the outputs as the network gave them (float32; float64 at 64-true),
    so that a run's files and a later ``evaluate`` read the same ages off the same outputs.
    """
    pred, sd = loss.predict(torch.as_tensor(outputs))
    pred = pred.numpy().astype(np.float64)
    return pred, np.full_like(pred, math.nan) if sd is None else sd.numpy().astype(np.float64)


@dataclass(frozen=True)
class SplitOutputs:
    """One split of the evaluation pass, a study a row, in the data module's order.

    Args:
        subject_id, sex: the studies' pseudonyms and sexes.
        age: their ages as the manifest gives them (float64, not the float32 batch copies).
        outputs: the network's raw outputs (N, K), as computed on the run's device.
        pred_age, pred_sd: what the loss decodes from ``outputs`` (float64; SD NaN for mse).
    """

    subject_id: list[str]
    sex: list[str]
    age: np.ndarray
    outputs: np.ndarray
    pred_age: np.ndarray
    pred_sd: np.ndarray

    @classmethod
    def decode(cls, loss: AgeLoss, outputs: np.ndarray, age: Sequence[float],
               subject_id: Sequence[str], sex: Sequence[str]) -> SplitOutputs:
        """The split with its ages decoded from ``outputs`` (the one place they are decoded)."""
        pred, sd = decode_outputs(loss, outputs)
        return cls(list(subject_id), list(sex), np.asarray(age, dtype=np.float64),
                   np.asarray(outputs), pred, sd)

    def __len__(self) -> int:
        return len(self.age)


@dataclass(frozen=True)
class FoldEvaluation:
    """The evaluation pass of one fold: the loss that decodes, and both evaluated splits.

    Args:
        loss: the run's loss (decodes outputs; its classes for calibration).
        val: the inner-validation split (calibration is fitted on it, never on ``test``).
        test: the held-out test fold (scored).
    """

    loss: AgeLoss
    val: SplitOutputs
    test: SplitOutputs
