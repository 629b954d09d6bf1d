"""Lightning callback: a run whose losses stop being numbers ends as a failure, not a success.

bf16 on CPUs (PyTorch's bf16 conv/BatchNorm kernels) and too high a learning rate can turn the
losses into NaN or infinity; training on would write NaN predictions, a constant 50.0, or a
metrics.json with NaN next to finite numbers, and exit 0. Checked once an epoch, on values
Lightning has reduced already (no extra device synchronisation inside the epoch).
"""

from __future__ import annotations

import math

import numpy as np
import pytorch_lightning as pl

from bone_age.utils.errors import BoneAgeError

WATCHED = ("train/loss", "val/loss")


class TrainingDiverged(BoneAgeError):
    """A loss or a prediction is NaN or infinite (the message gives the epoch and a hint)."""


def diverged_hint(trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
    """What to try: float32 where the run was in reduced precision, else a lower rate."""
    lr = next((g["lr"] for opt in trainer.optimizers for g in opt.param_groups), None)
    tries = [] if str(trainer.precision).startswith(("32", "64")) else [
        "trainer.precision=32-true"]
    if lr is not None:
        tries.append(f"a lower module.optimizer.lr (now {lr:g})")
    return "no results written; try " + " or ".join(tries or ["another seed"])


class DivergenceGuard(pl.Callback):
    """Stops the run with ``TrainingDiverged`` at the end of the first epoch whose training or
    validation loss is not finite, before that epoch's checkpoints are written."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        bad = {k: float(trainer.callback_metrics[k]) for k in WATCHED
               if k in trainer.callback_metrics
               and not math.isfinite(float(trainer.callback_metrics[k]))}
        # Every rank stops together (the training loss is a per-rank mean).
        if trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
            what = ", ".join(f"{k.replace('/', ' ')} {v}" for k, v in bad.items()) or \
                "loss not finite on another process"
            raise TrainingDiverged(f"training diverged at epoch {trainer.current_epoch + 1} "
                                   f"({what}): {diverged_hint(trainer, pl_module)}")


def check_predictions(evaluation: dict, tested_epoch: int) -> None:
    """Refuse an evaluation pass with NaN or infinite predicted ages (``SplitOutputs`` by
    split): the tested weights are broken, whatever the losses said."""
    for split, outputs in evaluation.items():
        bad = int((~np.isfinite(outputs.pred_age)).sum())
        if bad:
            raise TrainingDiverged(
                f"the tested weights (epoch {tested_epoch + 1}) predict a NaN or infinite age "
                f"for {bad} of {len(outputs)} {split} studies: no results written; try "
                "trainer.precision=32-true or a lower module.optimizer.lr")


class PrecisionMismatch(BoneAgeError):
    """The evaluation pass in reduced precision disagrees with float32 on the same weights."""


def check_precision(check: dict, precision: str, tested_epoch: int) -> None:
    """Refuse an evaluation pass in reduced precision whose predicted ages are off from what
    the same weights give in float32 (``BoneAgeModule.precision_check``): finite garbage, such
    as CPU bf16 once predicting 50.0 y for everyone where float32 gives about 60."""
    if check.get("off"):
        raise PrecisionMismatch(
            f"the tested weights (epoch {tested_epoch + 1}) in {precision} predict ages up to "
            f"{check['max_gap_y']:.3g} y away from float32's for {check['off']} of the "
            f"{check['studies']} test studies checked: no results written; the {precision} "
            "kernels of this machine are unsound (docs/performance.md): use "
            "trainer.precision=32-true")
