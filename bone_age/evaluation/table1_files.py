"""Table 1 written: ``table1.md`` (laid out like the paper's Table 1, with its notes),
``table1.csv`` (every column of the rows), ``table1_sites.csv`` for leave-one-site-out cells, and
the figures (the pooled scatter of each cell, the MAE bar chart of the grid)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bone_age.evaluation import plots
from bone_age.evaluation.pooling import BOOTSTRAP_RESAMPLES, Cells, not_learned, pooled_predictions
from bone_age.utils.outputs import write_text_atomic
from bone_age.utils.tables import write_csv

NOT_LEARNED_MARK = "†"


def _method(row: dict[str, Any]) -> str:
    """The row's loss, with the settings that set it apart where a folder mixes settings."""
    return row["loss"] + (f" ({row['settings']})" if row["settings"] else "")


def _site_section(by_site: list[dict[str, Any]]) -> str:
    lines = ["", "Leave-one-site-out (data.split=site): each row tests one site on a model "
             "trained on the others; pooled: all held-out sites together.", "",
             "| Model | Method | held-out site | n | MAE (SD), years | r | baseline MAE |",
             "|---|---|---|---|---|---|---|"]
    for r in by_site:
        lines.append(f"| {r['model']} | {_method(r)} | {r['site']} | {r['n']} | {r['mae']:.2f} "
                     f"({r['mae_sd']:.2f}) | {r['r']:.2f} | {r['baseline_mae']:.2f} |")
    return "\n".join(lines) + "\n"


def write_table(
    rows: list[dict[str, Any]], out_dir: Path, mixed: Sequence[str] = (),
    by_site: Sequence[dict[str, Any]] = (),
) -> tuple[Path, Path]:
    """``table1.md`` and ``table1.csv`` (and ``table1_sites.csv``) in ``out_dir``.

    Args:
        rows: Table 1's rows (``pooling.summarise``).
        out_dir: the folder they go to.
        mixed: the lines naming each row's settings where the runs differ beyond model and
            loss (``pooling.warn_mixed``), for the note under the table.
        by_site: the leave-one-site-out rows (``pooling.site_rows``).
    """
    md, csv_path = out_dir / "table1.md", out_dir / "table1.csv"
    lines = [
        "| Model | Method | MAE (SD), years | r | folds | n | per-fold MAE | per-fold r "
        "| baseline MAE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        model = r["model"] if r["model"] != previous else ""
        previous = r["model"]
        mark = NOT_LEARNED_MARK if r.get("below_baseline") is False else ""
        lines.append(
            f"| {model} | {_method(r)} | {r['mae']:.2f} ({r['mae_sd']:.2f}){mark} | "
            f"{r['r']:.2f} | {r['folds']} | {r['n']} | {r['fold_mae_mean']:.2f} ± "
            f"{r['fold_mae_sd']:.2f} | {r['fold_r_mean']:.2f} ± {r['fold_r_sd']:.2f} | "
            f"{r['baseline_mae']:.2f} |"
        )
    note = ("\nMAE (SD) and r on the pooled out-of-fold predictions; per-fold values are mean ± "
            "SD over folds; baseline MAE predicts each fold's training mean age.\n")
    unlearned = not_learned(rows)
    if unlearned:
        note += (f"\n{NOT_LEARNED_MARK} Not below the baseline: {len(unlearned)} of {len(rows)} "
                 "cells. The 95% bootstrap interval of MAE - baseline MAE (subjects resampled, "
                 f"paired, {BOOTSTRAP_RESAMPLES:,} resamples; `vs_baseline_low` / `_high` in "
                 "table1.csv) does not lie below 0: such a cell learned nothing that can be told "
                 "from predicting the training mean age. Do not read it as a result.\n")
    if mixed:
        note += ("\nNot one experiment: the runs differ in settings beyond model and loss, so "
                 "rows are kept apart and labelled with them.\n\n"
                 + "\n".join(f"    {line.strip()}" for line in mixed) + "\n")
    if by_site:
        note += _site_section(list(by_site))
        write_csv(out_dir / "table1_sites.csv", list(by_site[0]), by_site)
    write_text_atomic(md, "\n".join(lines) + "\n" + note)
    table = table_columns(rows)
    write_csv(csv_path, list(table[0]) if table else ["model"], table)
    return md, csv_path


def table_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's columns (without the internal cell key)."""
    return [{k: v for k, v in r.items() if k != "key"} for r in rows]


def write_figures(cells: Cells, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Pooled out-of-fold scatter per Table 1 cell, and the MAE bar chart of the grid.

    Args:
        cells: the pooled runs (``pooling.collect_runs``).
        rows: their Table 1 rows (``pooling.summarise``).
        out_dir: the figures' folder.
    """
    # Rows that differ in settings only get bars of their own, named by those settings.
    bars = [{**r, "model": r["model"] + (f" ({r['settings']})" if r["settings"] else "")}
            for r in rows]
    figures = {"mae_by_cell": plots.mae_grid_plot(bars, out_dir / "mae_by_cell.png")}
    for r in rows:
        folds = cells[r["key"]]
        age, pred = pooled_predictions(folds)
        name = "scatter_" + "_".join(r["key"][:3])
        if r["settings"]:  # cells differing only in settings get files of their own
            name += "_" + hashlib.blake2b(r["settings"].encode(), digest_size=4).hexdigest()
        figures[name] = plots.cell_scatter_plot(
            age, pred, out_dir / f"{name}.png", f"{r['model']}, {r['loss']}", len(folds))
    return figures
