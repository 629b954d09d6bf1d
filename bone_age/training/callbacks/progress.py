"""Lightning callback: a run's training progress as log lines (terminal and run log alike)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger("bone_age")


class EpochProgress(pl.Callback):
    """One log line per epoch (k/N, losses, validation MAE, seconds), and within an epoch a line
    at least every ``every_s`` seconds, so that neither a terminal nor a log is silent for long.

    Args:
        every_s: longest silence within an epoch, in seconds.
    """

    def __init__(self, every_s: float = 15.0) -> None:
        self.every_s = every_s
        self._epoch_start = self._last = 0.0

    @rank_zero_only
    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_start = self._last = time.perf_counter()

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every_s:
            self._last = now
            total = trainer.num_training_batches
            log.info("epoch %d/%d: batch %d/%s, %.0f s", trainer.current_epoch + 1,
                     trainer.max_epochs, batch_idx + 1, total, now - self._epoch_start)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # Called after the epoch's validation: both losses are in callback_metrics.
        m = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        for key, label, fmt in (("train/loss", "train loss", "{:.3f}"),
                                ("val/loss", "val loss", "{:.3f}"),
                                ("val/mae", "val MAE", "{:.2f} y")):
            if key in m:
                parts.append(f"{label} {fmt.format(float(m[key]))}")
        parts.append(f"{time.perf_counter() - self._epoch_start:.1f} s")
        log.info("  ".join(parts))
        self._last = time.perf_counter()

    @rank_zero_only
    def on_test_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        if dm is None or not getattr(dm, "splits", None):
            log.info("testing")
            return
        counts = {s: len(dm.splits[s]) for s in getattr(dm, "evaluation_splits", ("test",))}
        log.info("evaluating the tested weights once: %s", ", ".join(
            f"{n} {'held-out' if s == 'test' else 'inner-validation'} subjects"
            for s, n in counts.items()))
