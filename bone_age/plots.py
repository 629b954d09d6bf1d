"""Figures of a run: predicted vs actual age (the paper's Fig. 4)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def scatter_plot(
    age: np.ndarray, pred: np.ndarray, path: str | Path, title: str = "", mae: float | None = None
) -> Path:
    """Predicted vs actual age with the identity line and the +-MAE band, as the paper's Fig. 4."""
    age, pred = np.asarray(age, float), np.asarray(pred, float)
    mae = float(np.mean(np.abs(pred - age))) if mae is None else mae
    low, high = min(age.min(), pred.min()) - 2, max(age.max(), pred.max()) + 2
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    ax.scatter(age, pred, s=10, alpha=0.6, color="tab:blue", label="subjects")
    line = np.array([low, high])
    ax.plot(line, line, color="black", lw=1, label="perfect prediction")
    ax.plot(line, line + mae, "k--", lw=1, label=f"± MAE ({mae:.2f} y)")
    ax.plot(line, line - mae, "k--", lw=1)
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="Chronological age (years)",
           ylabel="Predicted bone age (years)", title=title or "Predicted vs actual age")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
