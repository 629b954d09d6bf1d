"""Runs that give the same predictions whether or not they were interrupted and resumed.

Every source of training randomness (shuffling, augmentation, dropout) is derived from
(seed, epoch) or (seed, global step) rather than from one running random stream, so a run
resumed from a checkpoint at epoch e replays exactly what an uninterrupted run does from e on.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Sampler


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch, drawn from ``seed + epoch`` (Lightning calls set_epoch)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def step_seed_of(seed: int, global_step: int, rank: int = 0) -> int:
    """The seed of one training step of one process."""
    return (seed * 1_000_003 + global_step) * 64 + rank

class ResumableLoader(DataLoader):
    """A training loader that Lightning can checkpoint in the middle of an epoch.

    SLURM's requeue signal arrives at any step; Lightning then saves the loader's state with the
    checkpoint (it treats loaders with ``state_dict``/``load_state_dict`` as resumable). The state
    is the epoch and the number of its batches already trained on; a restored loader skips those
    batches of that epoch (it reads and drops them: cache reads are cheap), so the resumed run
    sees exactly the batches an uninterrupted run would. ``progress`` returns that count.
    """

    def __init__(self, *args, progress: Callable[[], int] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._resume_at: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        return {"epoch": self._epoch(), "batches_done": self.progress() if self.progress else 0}

    def load_state_dict(self, state: dict) -> None:
        self._resume_at = (int(state["epoch"]), int(state["batches_done"]))
        # Lightning goes on with the iterator it makes right after this, before any set_epoch.
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self._resume_at[0])

    def _epoch(self) -> int:
        return int(getattr(self.sampler, "epoch", 0))

    def __iter__(self):
        iterator = super().__iter__()
        if self._resume_at is not None and self._resume_at[0] == self._epoch():
            for _ in range(self._resume_at[1]):
                next(iterator)
        return iterator
