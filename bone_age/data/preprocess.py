"""Geometry preprocessing done once per study before caching: orientation and resizing.

Values stay float32 counts (resizing preserves the total), so that count-dependent steps such as
Poisson thinning and the choice of intensity normalisation can still be made later, on the batch.
"""

from __future__ import annotations

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
        """Area-resample (rows, cols) counts to ``image_size``, preserving the total count."""
        h, w = self.image_size
        rows, cols = counts.shape
        if self.resize == "pad":
            scale = min(h / rows, w / cols)
            th, tw = max(1, round(rows * scale)), max(1, round(cols * scale))
        else:
            th, tw = h, w
        x = torch.from_numpy(np.ascontiguousarray(counts, dtype=np.float32))[None, None]
        if th <= rows and tw <= cols:
            y = F.adaptive_avg_pool2d(x, (th, tw))
        else:
            y = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
        y = y[0, 0] * (rows * cols) / (th * tw)
        out = torch.zeros((h, w), dtype=torch.float32)
        top, left = (h - th) // 2, (w - tw) // 2
        out[top : top + th, left : left + tw] = y
        return out.numpy()

    def __call__(self, views: dict[str, np.ndarray]) -> np.ndarray:
        """``{"anterior": counts, "posterior": counts}`` (either or both) -> (V, H, W)."""
        out = []
        for name in ("anterior", "posterior"):
            if name not in views:
                continue
            counts = np.clip(views[name], 0, None)
            if name == "posterior" and self.mirror_posterior:
                counts = counts[:, ::-1]
            out.append(self.resize_counts(counts))
        return np.stack(out).astype(np.float32)
