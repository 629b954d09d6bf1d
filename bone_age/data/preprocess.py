"""Geometry preprocessing done once per study before caching: orientation and resizing.

Values stay float32 counts (resizing preserves the total), so that count-dependent steps such as
Poisson thinning and the choice of intensity normalisation can still be made later, on the batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    """How a study's views become the network's (views, H, W) count images.

    - ``image_size``: (H, W) of the network input; the paper uses 224 x 224.
    - ``resize``: "stretch" fills the whole input (the paper); "pad" keeps the scan's aspect
      (1024 x 256 is 4:1) and pads the sides with zeros.
    - ``mirror_posterior``: flip the posterior view left-right so that the patient's right is on
      the same side in both views (a camera stores the posterior as seen from behind).
    """

    image_size: tuple[int, int] = (224, 224)
    resize: Literal["stretch", "pad"] = "stretch"
    mirror_posterior: bool = True

    def __post_init__(self) -> None:
        size = tuple(int(s) for s in self.image_size)
        if len(size) != 2 or min(size) < 8:
            raise ValueError(f"data.image_size must be [height, width] >= 8, got {size}")
        object.__setattr__(self, "image_size", size)
        if self.resize not in ("stretch", "pad"):
            raise ValueError(f"data.resize must be 'stretch' or 'pad', got {self.resize!r}")

    def settings(self) -> dict:
        return asdict(self)

    def resize_counts(self, counts: np.ndarray) -> np.ndarray:
        """Resample (..., rows, cols) counts to ``image_size`` (stretched or padded), keeping every
        count: each output pixel holds the counts of the input area it covers."""
        h, w = self.image_size
        x = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))
        if x.min() < 0:  # signed or rescaled pixel data only: no counts below zero
            x = x.clamp(min=0)
        rows, cols = x.shape[-2:]
        if self.resize == "pad":
            scale = min(h / rows, w / cols)
            th, tw = max(1, round(rows * scale)), max(1, round(cols * scale))
        else:
            th, tw = h, w
        y = box_resample(box_resample(x, th, axis=-2), tw, axis=-1)
        top, left = (h - th) // 2, (w - tw) // 2
        return F.pad(y, (left, w - tw - left, top, h - th - top)).numpy()

    def __call__(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """``{"anterior": counts, "posterior": counts}`` (either or both) -> (V, H, W)."""
        names = [name for name in ("anterior", "posterior") if name in views]
        out = np.empty((len(names), *self.image_size), dtype=np.float32)
        for i, name in enumerate(names):
            out[i] = self.resize_counts(views[name])
            if name == "posterior" and self.mirror_posterior:
                # Box resampling is mirror-symmetric, so flipping the small output is exact.
                out[i] = out[i, :, ::-1].copy()
        return out


def box_resample(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Resample axis -2 (rows) or -1 (columns) of ``x`` to ``size`` by area overlap, keeping the
    sum.

    The overlap weights repeat every ``n / gcd(n, size)`` input pixels (32 for 1024 -> 224), so the
    axis is cut into those blocks and all blocks share one small weight matrix: 4x faster than
    ``adaptive_avg_pool2d`` on a 1024 x 256 view, and exact in the total, which that is not.
    """
    n = x.shape[axis]
    if n == size:
        return x
    blocks = math.gcd(n, size)
    weights = _overlap_weights(n // blocks, size // blocks)
    if axis == -2:
        rows = weights.T @ x.reshape(*x.shape[:-2], blocks, n // blocks, x.shape[-1])
        return rows.reshape(*x.shape[:-2], size, x.shape[-1])
    if axis == -1:
        cols = x.reshape(*x.shape[:-1], blocks, n // blocks) @ weights
        return cols.reshape(*x.shape[:-1], size)
    raise ValueError(f"axis must be -2 or -1, got {axis}")


@functools.lru_cache(maxsize=32)
def _overlap_weights(n_in: int, n_out: int) -> torch.Tensor:
    """(n_in, n_out): the share of input pixel i falling in output pixel o (columns of 1s sum)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    i = np.arange(n_in)[:, None]
    overlap = np.minimum(edges[None, 1:], i + 1) - np.maximum(edges[None, :-1], i)
    return torch.from_numpy(np.clip(overlap, 0, None).astype(np.float32))
