"""Lightning callback: what the run's results say of the fit, recorded as it happens.

Whether Lightning has restored the checkpoint and begun (a failure before that is the
checkpoint's: ``bone_age.training.resume``), each epoch's losses and validation MAE (the
learning curves and ``history.csv``, whichever logger is configured, or none), the fit's wall
time and the run's phases. ``train()`` adds it to every run; it is no config entry.
"""

from __future__ import annotations

import time

import pytorch_lightning as pl

HISTORY_KEYS = ("train/loss", "val/loss", "val/mae")


class FitRecord(pl.Callback):
    """Records the fit's history and times the run's phases from its creation (the start of
    ``train()``'s composing)."""

    def __init__(self) -> None:
        self.started = False
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self._fit_start: float | None = None
        self.marks: dict[str, float] = {"train": time.perf_counter()}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch, batch_idx: int) -> None:
        self.marks.setdefault("first_step", time.perf_counter())

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the epoch's validation, so both losses of the epoch are in callback_metrics.
        found = {k: float(trainer.callback_metrics[k]) for k in HISTORY_KEYS
                 if k in trainer.callback_metrics}
        if found:
            self.history.append({"epoch": trainer.current_epoch + 1, **found})  # as the log counts

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.train_seconds = time.perf_counter() - self._fit_start

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["evaluation"] = time.perf_counter()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["evaluated"] = time.perf_counter()

    def timing(self) -> dict[str, float]:
        """``setup_seconds`` (train() to the first training step: cohort, cache, model, Lightning
        set-up, sanity check) and ``evaluation_seconds`` (the evaluation pass)."""
        m = self.marks
        spans = {"setup_seconds": ("train", "first_step"),
                 "evaluation_seconds": ("evaluation", "evaluated")}
        return {key: round(m[b] - m[a], 2) for key, (a, b) in spans.items()
                if a in m and b in m}
