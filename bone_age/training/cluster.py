"""SLURM: at the requeue signal Lightning saves a checkpoint and requeues the job.

SLURM sends the signal ``--signal=USR2@N`` seconds before the time limit (submitit asks for
USR2 by default; some clusters also send it at preemption). Lightning's SLURM support saves
``hpc_ckpt_<n>.ckpt`` in the run folder and calls ``scontrol requeue``; the requeued job starts
the same run again and continues from that checkpoint, mid-epoch included.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_fabric.plugins.environments import SLURMEnvironment

from bone_age.utils.errors import BoneAgeError


class SlurmConfigError(BoneAgeError, ValueError):
    """A SLURM setting of the config that cannot be used."""


def requeue_signal_of(name: str) -> signal.Signals:
    """``USR2`` or ``SIGUSR2`` -> signal.SIGUSR2."""
    key = str(name).upper()
    try:
        return signal.Signals[key if key.startswith("SIG") else f"SIG{key}"]
    except KeyError:
        raise SlurmConfigError(
            f"slurm.requeue_signal: {name!r} is not a signal name (e.g. USR2, USR1)") from None


def slurm_plugins(requeue_signal: str) -> list:
    """Lightning's SLURM environment, listening on our requeue signal, when running under SLURM."""
    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=requeue_signal_of(requeue_signal))]


@contextmanager
def lightning_handles_requeue(requeue_signal: str) -> Iterator[None]:
    """Let Lightning's handler take the requeue signal while the trainer runs.

    Lightning installs its handler only if the signal has none; the submitit worker has already
    installed its own (which requeues without saving the model), so it is set aside meanwhile.
    """
    if not SLURMEnvironment.detect():
        yield
        return
    signum = requeue_signal_of(requeue_signal)
    previous = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signum, previous)


HPC_CHECKPOINT = "hpc_ckpt_*.ckpt"


def hpc_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints Lightning saved at a SLURM requeue signal, oldest first."""
    found = output_dir.glob(HPC_CHECKPOINT)
    return sorted(found, key=lambda p: int(p.stem.rsplit("_", 1)[1]))
