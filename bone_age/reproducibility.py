"""Runs that give the same predictions whether or not they were interrupted and resumed.

Every source of training randomness (shuffling, augmentation, dropout) is derived from
(seed, epoch) or (seed, global step) rather than from one running random stream, so a run
resumed from a checkpoint at epoch e replays exactly what an uninterrupted run does from e on.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


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
