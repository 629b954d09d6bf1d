"""How checkpoints are written: the training state a resume needs only where a resume reads it.

Lightning writes the same full dump into every checkpoint; for a dual VGG16 the Adam state is
two thirds of it. The tested ("best") checkpoints need the weights and the run-metadata record
only; ``checkpoints/last.ckpt`` and SLURM's ``hpc_ckpt_<n>.ckpt`` (what ``resume`` and a requeue
read) keep the whole state. ``BackgroundCheckpointIO`` (Lightning's ``AsyncCheckpointIO``)
writes them in a thread, so the device does not wait for the disk either.
"""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import AsyncCheckpointIO

from bone_age.training.cluster import HPC_CHECKPOINT
from bone_age.utils.outputs import write_atomic

RESUME_CHECKPOINTS = ("last.ckpt", HPC_CHECKPOINT)
# Entries only a resume reads (the loops' progress stays: it is small, and says the epoch).
RESUME_STATE = ("optimizer_states", "lr_schedulers", "callbacks")


def is_resume_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a checkpoint a resume or a SLURM requeue reads."""
    return any(fnmatch(Path(path).name, pattern) for pattern in RESUME_CHECKPOINTS)


class ResumeStateIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that leaves the optimizer, scheduler and callback states out of
    every checkpoint but those a resume reads, and writes each to a temporary name renamed into
    place (``write_atomic``: Lightning's own write is in one go but in place, so a kill leaves a
    truncated file; and a FIFO or device named like a checkpoint is refused, never written)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if not is_resume_checkpoint(path):
            checkpoint = {k: v for k, v in checkpoint.items() if k not in RESUME_STATE}
        write_atomic(path, lambda tmp: TorchCheckpointIO.save_checkpoint(
            self, checkpoint, tmp, storage_options), keep_suffix=False)

    def load_checkpoint(self, path: _PATH, map_location: Any = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """Lightning's load (``trainer.fit/test(ckpt_path=...)``), always weights-only: no code
        pickled into a checkpoint runs, even with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``."""
        where = {} if map_location is None else {"map_location": map_location}
        return super().load_checkpoint(path, weights_only=True, **where)


class BackgroundCheckpointIO(AsyncCheckpointIO):
    """Lightning's ``AsyncCheckpointIO`` (a copy of the state taken, then written in a thread),
    except for the checkpoint saved at a SLURM requeue signal: the job is killed right after
    ``scontrol requeue``, so that one is written at once, after any write still pending."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path,
                        storage_options: Any | None = None) -> None:
        if fnmatch(Path(path).name, HPC_CHECKPOINT):
            self.teardown()  # waits for the pending writes (a later save starts a new thread)
            self.checkpoint_io.save_checkpoint(checkpoint, path, storage_options)
            return
        super().save_checkpoint(checkpoint, path, storage_options)
