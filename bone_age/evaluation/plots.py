"""Figures of a run and of a sweep, as PNG files (matplotlib, no display needed).

Run figures: predicted vs actual age (the paper's Fig. 4), Bland-Altman, error by age band and
sex, learning curves. Sweep figures: the pooled scatter of each Table 1 cell and the MAE grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bone_age.utils.console import plural
from bone_age.utils.outputs import write_atomic  # noqa: E402

DPI = 110
SEX_COLOURS = {"F": "tab:red", "M": "tab:blue"}


def _save(fig: plt.Figure, path: str | Path) -> Path:
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=DPI))
    finally:
        plt.close(fig)


def _scatter_axes(ax: plt.Axes, age: np.ndarray, pred: np.ndarray, mae: float, title: str) -> None:
    low, high = min(age.min(), pred.min()) - 2, max(age.max(), pred.max()) + 2
    ax.scatter(age, pred, s=10, alpha=0.6, color="tab:blue", label="subjects")
    line = np.array([low, high])
    ax.plot(line, line, color="black", lw=1, label="perfect prediction")
    ax.plot(line, line + mae, "k--", lw=1, label=f"± MAE ({mae:.2f} y)")
    ax.plot(line, line - mae, "k--", lw=1)
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="Chronological age (years)",
           ylabel="Predicted bone age (years)", title=title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def scatter_plot(
    age: np.ndarray, pred: np.ndarray, path: str | Path, title: str = "", mae: float | None = None
) -> Path:
    """Predicted vs actual age with the identity line and the +-MAE band, as the paper's Fig. 4."""
    age, pred = np.asarray(age, float), np.asarray(pred, float)
    mae = float(np.mean(np.abs(pred - age))) if mae is None else mae
    fig, ax = plt.subplots(figsize=(5, 5))
    _scatter_axes(ax, age, pred, mae, title or "Predicted vs actual age")
    return _save(fig, path)


def bland_altman_plot(
    age: np.ndarray, pred: np.ndarray, path: str | Path, title: str = ""
) -> Path:
    """Difference (predicted - actual) against the mean of both, with bias and 95% limits."""
    age, pred = np.asarray(age, float), np.asarray(pred, float)
    mean, diff = (age + pred) / 2, pred - age
    bias = float(diff.mean())
    sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(mean, diff, s=10, alpha=0.6, color="tab:blue")
    ax.axhline(bias, color="black", lw=1, label=f"bias {bias:+.2f} y")
    for sign in (-1, 1):
        ax.axhline(bias + sign * 1.96 * sd, color="black", ls="--", lw=1,
                   label=f"bias ± 1.96 SD (± {1.96 * sd:.2f} y)" if sign > 0 else None)
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="Mean of predicted and chronological age (years)",
           ylabel="Predicted - chronological age (years)",
           title=title or "Bland-Altman: agreement with chronological age")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def error_by_group_plot(
    age: np.ndarray, pred: np.ndarray, sex: Sequence[str], path: str | Path, title: str = "",
    band_years: int = 10,
) -> Path:
    """MAE per age band (``band_years`` wide) and sex, bars annotated with the subject count."""
    age, pred = np.asarray(age, float), np.asarray(pred, float)
    sex = np.asarray(sex, dtype=str)
    err = np.abs(pred - age)
    start = int(np.floor(age.min() / band_years) * band_years)
    edges = np.arange(start, age.max() + band_years, band_years)
    labels = [f"{int(lo)}-{int(lo) + band_years - 1}" for lo in edges[:-1]] or ["all"]
    band = np.clip(np.digitize(age, edges) - 1, 0, len(labels) - 1)
    x = np.arange(len(labels))
    width = 0.38
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for k, s in enumerate(("F", "M")):
        maes, counts = [], []
        for b in range(len(labels)):
            sel = (band == b) & (sex == s)
            maes.append(err[sel].mean() if sel.any() else np.nan)
            counts.append(int(sel.sum()))
        pos = x + (k - 0.5) * width
        bars = ax.bar(pos, np.nan_to_num(maes), width, color=SEX_COLOURS[s],
                      label={"F": "female", "M": "male"}[s], alpha=0.8)
        for rect, n in zip(bars, counts, strict=True):
            if n:
                ax.annotate(f"n={n}", (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.axhline(err.mean(), color="black", ls="--", lw=1, label=f"overall MAE {err.mean():.2f} y")
    ax.margins(y=0.12)  # room for the count labels above the tallest bar
    ax.set_xticks(x, labels)
    ax.set(xlabel="Chronological age band (years)", ylabel="Mean absolute error (years)",
           title=title or "Error by age band and sex")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def learning_curves_plot(
    history: Sequence[Mapping[str, float]], path: str | Path, title: str = ""
) -> Path:
    """Training and validation loss (left) and validation MAE (right) per epoch."""
    epochs = [int(h["epoch"]) for h in history]

    def series(key: str) -> np.ndarray:
        return np.array([h.get(key, np.nan) for h in history], dtype=float)

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.plot(epochs, series("train/loss"), "o-", ms=3, label="training")
    left.plot(epochs, series("val/loss"), "o-", ms=3, label="validation")
    left.set(xlabel="Epoch", ylabel="Loss", title="Loss")
    left.legend(fontsize=8)
    right.plot(epochs, series("val/mae"), "o-", ms=3, color="tab:green")
    right.set(xlabel="Epoch", ylabel="Validation MAE (years)", title="Validation MAE")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def cell_scatter_plot(
    age: np.ndarray, pred: np.ndarray, path: str | Path, title: str, folds: int
) -> Path:
    """Pooled out-of-fold predictions of one Table 1 cell (model + loss)."""
    age, pred = np.asarray(age, float), np.asarray(pred, float)
    mae = float(np.mean(np.abs(pred - age)))
    fig, ax = plt.subplots(figsize=(5, 5))
    _scatter_axes(ax, age, pred, mae, f"{title}\n{plural(folds, 'fold')} pooled, n = {len(age)}")
    ax.title.set_fontsize(10)
    return _save(fig, path)


def mae_grid_plot(rows: Sequence[Mapping], path: str | Path) -> Path:
    """Bar chart of pooled MAE (error bar: SD over folds) per model, one bar per loss."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    losses = list(dict.fromkeys(r["loss"] for r in rows))
    width = 0.8 / max(len(losses), 1)
    x = np.arange(len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(models) + 2), 4.5))
    for k, loss in enumerate(losses):
        cells = {r["model"]: r for r in rows if r["loss"] == loss}
        mae = [cells[m]["mae"] if m in cells else np.nan for m in models]
        sd = [cells[m].get("fold_mae_sd", 0.0) if m in cells else 0.0 for m in models]
        bars = ax.bar(x + (k - (len(losses) - 1) / 2) * width, np.nan_to_num(mae), width,
                      yerr=sd, capsize=3, label=loss)
        # A cell not below the baseline (bootstrap interval, report.py) is hatched.
        for rect, m in zip(bars, models, strict=True):
            if m in cells and cells[m].get("below_baseline") is False:
                rect.set_hatch("//")
                rect.set_edgecolor("black")
        # Values at the foot of the bars, clear of the error bars.
        for rect, v in zip(bars, mae, strict=True):
            if np.isfinite(v):
                ax.annotate(f"{v:.2f}", (rect.get_x() + rect.get_width() / 2, 0.1), ha="center",
                            va="bottom", fontsize=7, color="white", fontweight="bold")
    baseline = np.mean([r["baseline_mae"] for r in rows]) if rows else np.nan
    if np.isfinite(baseline):
        ax.axhline(baseline, color="grey", ls="--", lw=1,
                   label=f"baseline (training mean) {baseline:.2f} y")
    if any(r.get("below_baseline") is False for r in rows):
        ax.bar([0], [0], width=0, hatch="//", facecolor="white", edgecolor="black",
               label="not below the baseline (95% bootstrap)")
    ax.set_xticks(x, [m.replace(" [", "\n[") for m in models], fontsize=8)
    ax.set(ylabel="MAE (years), pooled out-of-fold",
           title="Table 1: MAE by model and loss (error bars: SD over folds)")
    top = max([r["mae"] + r.get("fold_mae_sd", 0.0) for r in rows] + [baseline], default=1.0)
    ax.set_ylim(0, 1.3 * np.nan_to_num(top, nan=1.0))  # headroom for the legend
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper left", ncol=2)
    return _save(fig, path)


def reliability_plot(rel: dict, path: Path, cohort: str = "test fold") -> Path:
    """Nominal vs observed coverage of the central intervals (diagonal = calibrated)."""
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="ideal")
    styles = {"normal": ("C0", "-", "mean ± z·SD"), "quantile": ("C1", "-", "softmax quantiles"),
              "normal_T": ("C0", ":", "mean ± z·SD, temperature"),
              "quantile_T": ("C1", ":", "quantiles, temperature")}
    for key, (color, ls, label) in styles.items():
        if key in rel:
            ax.plot(rel["level"], rel[key], color=color, ls=ls, marker="o", ms=3, label=label)
    ax.set(xlabel="nominal coverage", ylabel=f"observed coverage ({cohort})",
           xlim=(0, 1), ylim=(0, 1), title="Interval calibration")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120))
    finally:
        plt.close(fig)
