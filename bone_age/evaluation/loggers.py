"""Lightning's CSV logger counting epochs as the console, the checkpoints and history.csv do.

Lightning adds a 0-based ``epoch`` column to every row it logs; a run's console says
``epoch 1/20`` for the first epoch and ``RunCheckpoint`` names it ``epoch001.ckpt``. Rows of the
fit are shifted to count from 1. Rows of the evaluation pass (``test/...`` keys) are logged
after the fit, when Lightning's counter already holds the number of epochs fitted, so they keep
it: "after epoch N".
"""

from __future__ import annotations

from collections.abc import Mapping

from pytorch_lightning.loggers import CSVLogger

EVALUATION_PREFIX = "test/"


def counted_from_one(metrics: Mapping[str, float]) -> dict[str, float]:
    """The row with its fit epoch counted from 1 (evaluation rows and rows without one as given).

    Args:
        metrics: one row Lightning logs (``epoch`` is its 0-based counter where present).
    """
    row = dict(metrics)
    evaluation = any(key.startswith(EVALUATION_PREFIX) for key in row)
    if "epoch" in row and not evaluation:
        row["epoch"] = row["epoch"] + 1
    return row


class EpochCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``epoch`` column counts the fit's epochs from 1."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(counted_from_one(metrics), step)
