"""Batch transforms applied on the training device: count normalisation and augmentation.

They work on whole batches of count images (N, V, H, W) so that augmentation runs on the GPU
where there is one, not per sample in the loader workers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# torch.quantile refuses inputs of more than 2**24 elements (a batch of 256 two-view 224 x 224
# scans has 25.7 M): the rows are taken in chunks under that size, each row whole.
_QUANTILE_MAX_NUMEL = 2**24 - 1


def rowwise_quantile(x: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(x, q, dim=-1)`` (linear interpolation) for inputs of any size.

    Args:
        x: (..., P) values; each row of P values gets one quantile.
        q: the quantile in [0, 1].
    """
    if torch.compiler.is_compiling():
        # Traced (ONNX export, torch.compile): no shape-dependent chunking, which would put a
        # bound on the batch size into the graph; the exported graph has no such size limit.
        # Sorted order statistics, not torch.quantile: torch 2.11 (the GPU image's) cannot
        # export quantile over a symbolic batch ("Cannot call numel() on tensor with symbolic
        # sizes"); the row length (the pixels of a view) is fixed, so the indices are too.
        return _sorted_quantile(x.reshape(-1, x.shape[-1]), q).reshape(x.shape[:-1])
    rows = x.reshape(-1, x.shape[-1])
    per_chunk = max(1, _QUANTILE_MAX_NUMEL // max(1, rows.shape[1]))
    if rows.shape[1] > _QUANTILE_MAX_NUMEL:  # one row past the limit: exact order statistics
        return _sorted_quantile(rows, q).reshape(x.shape[:-1])
    parts = [torch.quantile(chunk, q, dim=1) for chunk in rows.split(per_chunk)]
    return torch.cat(parts).reshape(x.shape[:-1])


def _sorted_quantile(rows: torch.Tensor, q: float) -> torch.Tensor:
    pos = q * (rows.shape[1] - 1)
    lo, frac = int(math.floor(pos)), pos - math.floor(pos)
    ordered = rows.sort(dim=1).values
    hi = min(lo + 1, rows.shape[1] - 1)
    return ordered[:, lo] + frac * (ordered[:, hi] - ordered[:, lo])


class CountNormalize(nn.Module):
    """Counts -> network input: intensity scaling, grey to 3 channels, ImageNet normalisation.

    ``percentile`` (default) divides each view by its ``percentile``-th count percentile, which is
    robust to hot bladders and metastases; ``total`` divides by the mean count of the view, so
    that the image total is fixed.
    """

    def __init__(
        self, method: Literal["percentile", "total"] = "percentile", percentile: float = 99.0
    ) -> None:
        super().__init__()
        if method not in ("percentile", "total"):
            raise ValueError(f"data.normalize must be 'percentile' or 'total', got {method!r}")
        self.method = method
        self.q = percentile / 100.0
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1))

    def scale(self, counts: torch.Tensor) -> torch.Tensor:
        flat = counts.flatten(2).float()
        if self.method == "percentile":
            ref = rowwise_quantile(flat, self.q)
        else:
            ref = flat.mean(dim=2) * 4.0
        return counts / ref.clamp_min(1e-6)[..., None, None]

    def forward(self, counts: torch.Tensor) -> torch.Tensor:
        x = self.scale(counts.float()).clamp_(0.0, 2.0)
        return (x.unsqueeze(2).expand(-1, -1, 3, -1, -1) - self.mean) / self.std


class BatchAugment(nn.Module):
    """Training-time augmentation of count images (N, V, H, W); identity when disabled.

    - ``dose``: Poisson thinning to a random fraction in [dose_min, 1] of the counts, i.e. the
      same patient scanned with a lower dose or a faster table speed.
    - ``gain``: multiplies the counts by a random factor in [1/gain, gain] (calibration,
      normalisation jitter); with Poisson thinning this changes the noise level seen.
    - ``affine``: small rotation (degrees), scale and translation (fraction of the image),
      the same for all views of a subject (one patient position on the table).
    """

    def __init__(
        self,
        enabled: bool = True,
        dose_min: float = 0.5,
        gain: float = 1.1,
        rotate_deg: float = 3.0,
        scale: float = 0.05,
        translate: float = 0.03,
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.dose_min, self.gain = dose_min, gain
        self.rotate_deg, self.scale, self.translate = rotate_deg, scale, translate
        self._generator: torch.Generator | None = None

    def _uniform(self, n: int, low: float, high: float, ref: torch.Tensor) -> torch.Tensor:
        return torch.empty(n, device=ref.device).uniform_(low, high, generator=self._generator)

    def forward(
        self, counts: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Augment a batch; a ``generator`` makes the draws independent of the global RNG."""
        if not self.enabled:
            return counts
        self._generator = generator
        n = counts.shape[0]
        x = counts.float()
        if self.dose_min < 1.0:
            # Binomial thinning of Poisson counts is again Poisson: an exact lower-dose scan.
            keep = self._uniform(n, self.dose_min, 1.0, x).view(n, 1, 1, 1).expand_as(x)
            x = torch.binomial(x.clamp_min(0).round(), keep.contiguous(), generator=generator)
            x = x / keep
        if self.gain > 1.0:
            x = x * self._uniform(n, 1 / self.gain, self.gain, x).view(n, 1, 1, 1)
        if self.rotate_deg or self.scale or self.translate:
            x = self._affine(x)
        return x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        angle = self._uniform(n, -self.rotate_deg, self.rotate_deg, x) * math.pi / 180
        zoom = self._uniform(n, 1 - self.scale, 1 + self.scale, x)
        shift = torch.stack(
            [self._uniform(n, -self.translate, self.translate, x) * 2 for _ in range(2)], dim=1
        )
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
