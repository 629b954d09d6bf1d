"""Lightning callback: a run's training progress as log lines (terminal and run log alike)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from bone_age.utils.console import duration, size_text

log = logging.getLogger("bone_age")


class EpochProgress(pl.Callback):
    """One log line per epoch (k/N, losses, validation MAE, seconds, time left), and within an
    epoch a line at least every ``every_s`` seconds, so that neither a terminal nor a log is
    silent for long. Early on, one line estimates the epoch's and the run's time from the
    first training steps (the first one, with its warm-up, left out), so that a run sized
    beyond the machine says so within a few steps instead of after hours.

    Args:
        every_s: longest silence within an epoch, in seconds.
        estimate_steps: steps timed, after the first, for the estimate.
    """

    def __init__(self, every_s: float = 15.0, estimate_steps: int = 2) -> None:
        self.every_s, self.estimate_steps = every_s, estimate_steps
        self._epoch_start = self._last = 0.0
        self._epoch_seconds: list[float] = []
        self._step_marks: list[float] = []
        self._estimated = False

    @rank_zero_only
    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_start = self._last = time.perf_counter()

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        total = trainer.num_training_batches
        if not self._estimated:
            self._step_marks.append(now)
            if len(self._step_marks) > self.estimate_steps:
                self._estimate(trainer, module, (now - self._step_marks[0])
                               / (len(self._step_marks) - 1))
        if now - self._last >= self.every_s:
            self._last = now
            left = ""
            if isinstance(total, int) and batch_idx + 1 < total:
                step = (now - self._epoch_start) / (batch_idx + 1)
                left = f", ~{duration(step * (total - batch_idx - 1))} left in the epoch"
            log.info("epoch %d/%d: batch %d/%s, %.0f s%s", trainer.current_epoch + 1,
                     trainer.max_epochs, batch_idx + 1, total, now - self._epoch_start, left)

    def _estimate(self, trainer: pl.Trainer, module: pl.LightningModule, step_s: float) -> None:
        self._estimated = True
        steps = trainer.num_training_batches
        if not isinstance(steps, int) or steps <= 0:
            return
        epoch = step_s * steps * 1.1  # + validation, about a tenth of the training subjects
        epochs_left = trainer.max_epochs - trainer.current_epoch
        stop = " (early stopping may end it sooner)" if trainer.early_stopping_callback else ""
        log.info("estimate: %.2f s a training step, %d steps an epoch: ~%s an epoch, ~%s for "
                 "%d epochs%s", step_s, steps, duration(epoch), duration(epoch * epochs_left),
                 epochs_left, stop)
        if module is not None:  # weights; Adam's two moments triple them in last.ckpt
            weights = sum(t.numel() * t.element_size() for t in module.state_dict().values())
            log.info("disk: about %s a tested checkpoint, %s last.ckpt (with the optimizer "
                     "state)", size_text(weights), size_text(3 * weights))

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
        seconds = time.perf_counter() - self._epoch_start
        self._epoch_seconds.append(seconds)
        parts.append(f"{seconds:.1f} s")
        left = trainer.max_epochs - trainer.current_epoch - 1
        if left > 0 and trainer.max_epochs > 0:
            recent = self._epoch_seconds[-3:]
            parts.append(f"~{duration(sum(recent) / len(recent) * left)} left at most")
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
