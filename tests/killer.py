"""A test-only callback that kills its own process hard, as a crash or an OOM killer would."""

import os
import signal

import pytorch_lightning as pl


class KillAfterEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class SignalAtStep(pl.Callback):
    """Sends this process a signal at a training step, as SLURM does before the time limit.

    Only in a run that did not start from a checkpoint, so the requeued run goes on undisturbed.
    """

    def __init__(self, step: int, signum: str = "SIGUSR2") -> None:
        self.step, self.signum = step, signal.Signals[signum]

    def on_train_batch_start(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step and trainer.ckpt_path is None:
            os.kill(os.getpid(), self.signum)
