"""Preview PNG: a few phantom subjects of different ages, anterior + posterior, clinical grey."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bone_age.utils.outputs import write_atomic

from .subject import Subject, render_subject, sample_subject

TARGETS = ((41, "F"), (60, "M"), (62, "F"), (79, "M"), (80, "F"))


def pick_subjects(seed: int, sigma: float = 3.0, variability: float = 1.0) -> list[Subject]:
    """Metastasis-free subjects closest to the target (age, sex) pairs (sampling only)."""
    pool = [sample_subject(seed, i, sigma, variability) for i in range(600)]
    pool = [s for s in pool if s.nuisance.n_metastases == 0]
    picks = []
    for age, sex in TARGETS:
        taken = {p.index for p in picks}
        cand = [s for s in pool if s.sex == sex and s.index not in taken]
        picks.append(min(cand, key=lambda s: (abs(s.age - age), abs(s.b - s.age))))
    return picks


def render_preview(
    path: Path | str, seed: int = 0, sigma: float = 3.0, variability: float = 1.0
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subs = pick_subjects(seed, sigma, variability)
    fig, axes = plt.subplots(1, 2 * len(subs), figsize=(1.45 * 2 * len(subs), 6.3))
    for k, s in enumerate(subs):
        ant, post, _, _ = render_subject(s)
        for j, (img, name) in enumerate(((ant, "ANT"), (post, "POST"))):
            ax = axes[2 * k + j]
            ax.imshow(img[40:1000], cmap="gray_r", vmin=0, vmax=float(np.percentile(img, 99.7)),
                      interpolation="lanczos")  # fmt: skip
            ax.set_title(f"{s.sex} {s.age} y (b={s.b:.0f})\n{name}", fontsize=9)
            ax.axis("off")
    fig.suptitle("bone_age.phantom: anterior / posterior (as acquired), grey inverted")
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
