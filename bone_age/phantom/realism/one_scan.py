"""One real scan against the phantom: its measures inside the phantom's 5-95% range of the
same view."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.data.anatomy import ViewDecision
from bone_age.utils.outputs import write_atomic, write_text_atomic

from ..render import NCOLS, NROWS
from ..subject import render_subject, sample_subject
from .measures import measure

Frame = np.ndarray
FILES = ("realism.md", "realism.json", "side_by_side.png", "measures.png")
NEAR_END = 10.0  # %: a real value this close to either end of the phantom's distribution


def phantom_frames(view: str, subjects: int, seed: int = 0) -> list[Frame]:
    """Frames of one view (as acquired) of the first ``subjects`` subjects of a cohort.

    Args:
        view: "anterior" or "posterior".
        subjects: how many subjects (>= 1).
        seed: cohort seed.
    """
    k = 0 if view == "anterior" else 1
    return [render_subject(sample_subject(seed, i))[k] for i in range(subjects)]


def compare(real: dict[str, float], phantom: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """One row per measure: real value, phantom 5th / 95th percentile, whether inside, and the
    real value's percentile among the phantom's values (near 0 or 100: a report with another
    seed or fewer subjects may leave it out).

    Args:
        real: measures of the real frame.
        phantom: measures of each phantom frame (same keys).
    """
    rows = []
    for name, value in real.items():
        vals = np.array([p[name] for p in phantom], dtype=float)
        vals = vals[np.isfinite(vals)]
        p5, p95 = (np.percentile(vals, [5, 95]) if vals.size else (np.nan, np.nan))
        inside = bool(np.isfinite(value) and p5 <= value <= p95)
        # Ties count half, so a real value equal to every phantom value sits at 50.
        pct = (100.0 * (np.mean(vals < value) + 0.5 * np.mean(vals == value))
               if vals.size and np.isfinite(value) else np.nan)  # fmt: skip
        rows.append({"measure": name, "real": float(value), "p5": float(p5),
                     "p95": float(p95), "inside": inside,
                     "percentile": round(float(pct), 1)})  # fmt: skip
    return rows


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.3e}"


def markdown(rows: list[dict[str, Any]], decision: ViewDecision, how: str, n: int,
             seed: int, source: str) -> str:  # fmt: skip
    """The report text (no file names: a scan's name may identify its patient).

    Args:
        rows: the table from :func:`compare`.
        decision: the view compared and the anatomy's evidence.
        how: how the view was chosen.
        n: number of phantom subjects.
        seed: phantom cohort seed.
        source: a description of the reference without its file name.
    """
    n_in = sum(r["inside"] for r in rows)
    near = [r["measure"] for r in rows
            if r["inside"] and not NEAR_END <= r["percentile"] <= 100 - NEAR_END]  # fmt: skip
    lines = [
        "# Phantom realism report",
        "",
        f"Reference: {source}. Phantom: {n} subjects (seed {seed}), {decision.view} view.",
        "",
        f"View of the reference: **{decision.view}** ({how}). Anatomy says: {decision.reason()}.",
        "",
        f"**{n_in} of {len(rows)} measures** of the reference lie inside the phantom's 5-95% "
        "range" + (f"; {len(near)} of them within {NEAR_END:g}% of an end of the phantom's "
                   f"distribution ({', '.join(near)}), which a report with another seed or "
                   "fewer subjects may leave out." if near else "."),
        "",
        "| measure | real | phantom p5 | phantom p95 | inside | real's percentile in phantom |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mark = "yes" if r["inside"] else "**no**"
        lines.append(f"| {r['measure']} | {_fmt(r['real'])} | {_fmt(r['p5'])} | "
                     f"{_fmt(r['p95'])} | {mark} | {r['percentile']:g} |")  # fmt: skip
    lines += ["", "Figures: `side_by_side.png` (reference and the phantom scan nearest in total "
              "counts, same grey scale in counts), `measures.png` (each measure scaled so the "
              "phantom's 5-95% range spans 0..1; the dot is the reference).", ""]  # fmt: skip
    return "\n".join(lines)


def _figure(path: Path, draw: Callable[[Any], None], size: tuple[float, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=size)
    draw(fig)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)


def side_by_side(path: Path, real: Frame, phantom: Frame, title: str = "phantom") -> None:
    """Real and phantom frame at the same grey scale (counts, 0 .. real 99.7th percentile).

    Args:
        path: PNG to write.
        real: the reference frame.
        phantom: a phantom frame.
        title: caption of the phantom panel.
    """
    vmax = float(np.percentile(real, 99.7))

    def draw(fig: Any) -> None:
        for k, (img, name) in enumerate(((real, "real"), (phantom, title))):
            ax = fig.add_subplot(1, 2, k + 1)
            ax.imshow(img, cmap="gray_r", vmin=0, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name}\n{img.sum():.3g} counts, grey 0..{vmax:.0f}", fontsize=9)
            ax.axis("off")

    _figure(path, draw, (5.0, 10.0))


def _measures_plot(path: Path, rows: list[dict[str, Any]]) -> None:
    def draw(fig: Any) -> None:
        ax = fig.add_subplot(1, 1, 1)
        for i, r in enumerate(rows):
            span = (r["p95"] - r["p5"]) or 1e-12
            x = (r["real"] - r["p5"]) / span
            ax.plot([0, 1], [i, i], color="0.7", lw=6)
            ax.plot(np.clip(x, -1.5, 2.5), i, "o", color="C0" if r["inside"] else "C3")
        ax.set_yticks(range(len(rows)), [r["measure"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlim(-1.6, 2.6)
        ax.set_xlabel("(real - p5) / (p95 - p5); grey bar = phantom 5-95%")

    _figure(path, draw, (7.0, 0.25 * len(rows) + 1.5))


def write_report(out: Path, real: Frame, decision: ViewDecision, how: str, subjects: int,
                 seed: int = 0, source: str = "a real scan") -> list[dict[str, Any]]:  # fmt: skip
    """Measure the reference and the phantom frames; write realism.md/.json and figures.

    Args:
        out: output folder (created).
        real: the reference frame (counts, rows head to feet, 1024 x 256).
        decision: the view to compare (phantom frames of this view).
        how: how the view was chosen, for the report.
        subjects: number of phantom subjects.
        seed: phantom cohort seed.
        source: a description of the reference without its file name.
    """
    if real.shape != (NROWS, NCOLS):
        raise ValueError(f"reference frame is {real.shape[0]} x {real.shape[1]}; the phantom "
                         f"renders {NROWS} x {NCOLS}")  # fmt: skip
    frames = phantom_frames(decision.view, subjects, seed)
    ref = measure(real)
    rows = compare(ref, [measure(f) for f in frames])
    nearest = min(frames, key=lambda f: abs(float(f.sum()) - ref["total_counts"]))
    out.mkdir(parents=True, exist_ok=True)
    side_by_side(out / "side_by_side.png", real, nearest, f"phantom ({decision.view})")
    _measures_plot(out / "measures.png", rows)
    write_text_atomic(out / "realism.json", json.dumps(rows, indent=1) + "\n")
    write_text_atomic(out / "realism.md", markdown(rows, decision, how, subjects, seed, source))
    return rows
