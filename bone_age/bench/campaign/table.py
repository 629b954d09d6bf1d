"""``experiments/table1/table1.md``: the campaign's Table 1 as it stands, beside the paper's claims.

Cells are pooled by the Table 1 report's own code (``bone_age.evaluation.pooling``: runs pooled
only when their settings match); this adds what a campaign needs: folds done of 5, a 95%
bootstrap interval of the pooled MAE (scipy.stats.bootstrap over subjects), the wall and GPU
time the cell took, the phantom's floor and oracle, and each of the paper's claims with whether
the phantom reproduces it, judged on the folds every cell involved has.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import bootstrap

from bone_age.bench.campaign.plan import FOLDS, read_visits, run_records
from bone_age.evaluation.metrics import age_metrics
from bone_age.evaluation.pooling import LOSS_ORDER, MODEL_ORDER, collect_runs, summarise
from bone_age.evaluation.run_files import FinishedRun
from bone_age.utils.outputs import write_text_atomic

PAPER_CELL = ("multi_vgg16", "mv")
PAPER_MAE, PAPER_SD, PAPER_R = 3.40, 2.87, 0.91


def mae_interval(age: np.ndarray, pred: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the MAE, resampling subjects."""
    err = np.abs(pred - age)
    if len(err) < 2:
        return math.nan, math.nan
    res = bootstrap((err,), np.mean, confidence_level=0.95, n_resamples=2000,
                    method="percentile", random_state=seed)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _pooled(folds: dict[int, FinishedRun], keep: set[int] | None = None):
    chosen = [f for k, f in sorted(folds.items()) if keep is None or k in keep]
    return (np.concatenate([f.age for f in chosen]),
            np.concatenate([f.pred for f in chosen]))


def _cells_by_name(cells: dict) -> dict[tuple[str, str], list[tuple]]:
    by_name: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for key in cells:
        by_name[(key[0], key[2])].append(key)
    return by_name


def claims(cells: dict, phantom: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(claim, the phantom's figures, verdict) for each of the paper's claims."""
    by_name = _cells_by_name(cells)
    grid = [(m, loss) for m in MODEL_ORDER for loss in LOSS_ORDER]
    mixed = [f"{m}+{loss}" for m, loss in grid if len(by_name.get((m, loss), [])) > 1]
    missing = [f"{m}+{loss}" for m, loss in grid if (m, loss) not in by_name]
    out = []
    proposed = by_name.get(PAPER_CELL, [])
    if len(proposed) == 1:
        age, pred = _pooled(cells[proposed[0]])
        m = age_metrics(pred, age)
        oracle = phantom.get("oracle_mae")
        ratio = f"; {m['mae'] / oracle:.2f} x the phantom's oracle" if oracle else ""
        seen = (f"{m['mae']:.2f} ({m['mae_sd']:.2f}) y, r {m['pearson_r']:.2f} "
                f"({len(cells[proposed[0]])} fold(s){ratio})")
        verdict = ("not comparable in level: a synthetic cohort with its own error floor "
                   f"({phantom.get('bayes_mae_floor', '?')} y); shown for scale")
    else:
        seen, verdict = "-", "pending: the cell has no run yet" if not proposed else \
            "runs of this cell differ in settings"
    out.append((f"Multiple-input VGG16 + mean-variance loss: MAE {PAPER_MAE:.2f} "
                f"({PAPER_SD:.2f}) y, r {PAPER_R:.2f}", seen, verdict))
    ordering = ("Mean-variance loss is best (lowest MAE for each model)",
                "The dual-input model is best of all (multi_vgg16 + mean-variance, lowest MAE "
                "of the 12 cells)")
    if missing or mixed:
        why = (f"pending: {len(missing)} of 12 cells have no run yet" if missing
               else f"runs differ in settings in {', '.join(mixed)}")
        return out + [(c, "-", why) for c in ordering]
    keys = {name: by_name[name][0] for name in grid}
    common = set.intersection(*(set(cells[k]) for k in keys.values()))
    if not common:
        return out + [(c, "-", "pending: no fold is done in every cell") for c in ordering]
    mae = {name: age_metrics(*_pooled(cells[k], common)[::-1])["mae"] for name, k in keys.items()}
    folds = f"fold(s) {', '.join(map(str, sorted(common)))}"
    best_loss = {m: min(LOSS_ORDER, key=lambda loss, m=m: mae[(m, loss)]) for m in MODEL_ORDER}
    wins = [m for m in MODEL_ORDER if best_loss[m] == "mv"]
    out.append((ordering[0], "; ".join(
        f"{m}: " + ", ".join(f"{loss} {mae[(m, loss)]:.2f}" for loss in LOSS_ORDER)
        for m in MODEL_ORDER) + f" ({folds})",
        "yes" if len(wins) == len(MODEL_ORDER) else
        f"no: mean-variance is best for {len(wins)} of {len(MODEL_ORDER)} models"
        + (f" ({', '.join(wins)})" if wins else "")))
    ranked = sorted(grid, key=lambda name: mae[name])
    first, second = ranked[0], ranked[1]
    out.append((ordering[1], f"best {first[0]} + {first[1]} {mae[first]:.2f} y, next "
                f"{second[0]} + {second[1]} {mae[second]:.2f} y ({folds})",
                "yes" if first == PAPER_CELL else "no"))
    return out


def _hours(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def write_table(campaign: Path, left_out: list[str] | None = None) -> Path:
    """Rewrite ``campaign/table1.md`` from ``campaign/runs`` and ``campaign/visits.json``.

    ``left_out`` receives the damaged runs (named in warnings, not in the table), as the
    report's ``collect_runs`` finds them.
    """
    visits = read_visits(campaign / "visits.json")
    records = run_records(visits)
    real = [v for v in visits if not v.get("dry_run")]
    phantom = (real or visits or [{}])[-1].get("phantom", {})
    cells = (collect_runs(campaign / "runs", left_out) if (campaign / "runs").is_dir()
             else {})
    rows = summarise(cells) if cells else []
    lines = ["# Table 1 at paper scale, on the 4,474-subject phantom", "",
             "Written by `python -m bone_age.bench.campaign merge` (do not edit): each cell pools "
             "the out-of-fold predictions of its finished folds; the 95% interval of the MAE "
             "is a percentile bootstrap over subjects (2,000 resamples). Wall time is each "
             "run's command from start to end on the GPU machine; GPU time is that wall time "
             "x the GPU's busy share sampled during it (NVML, every 0.5 s).", ""]
    lines += [f"Phantom: version {phantom['version']}, {phantom['subjects']} subjects; Bayes "
              f"error floor {phantom['bayes_mae_floor']} y, oracle MAE {phantom['oracle_mae']} "
              "y (a perfect reader of the simulated age effects)." if phantom else
              "Phantom: no visit has built it yet.", ""]
    lines += ["| Model | Loss | folds | MAE (SD), y | 95% CI of MAE | r | baseline MAE | wall "
              "| GPU time |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    total_wall = total_gpu = 0.0
    for row in rows:
        folds = cells[row["key"]]
        low, high = mae_interval(*_pooled(folds))
        recs = [records.get(f.dir.name, {}) for f in folds.values()]
        wall = sum(r.get("wall_s", 0.0) for r in recs)
        gpu = sum(r.get("wall_s", 0.0) * r["gpu_busy"] for r in recs if "gpu_busy" in r)
        total_wall, total_gpu = total_wall + wall, total_gpu + gpu
        name = row["model"] + (f" ({row['settings']})" if row["settings"] else "")
        lines.append(f"| {name} | {row['loss']} | {row['folds']}/{FOLDS} | {row['mae']:.2f} "
                     f"({row['mae_sd']:.2f}) | {low:.2f}-{high:.2f} | {row['r']:.3f} | "
                     f"{row['baseline_mae']:.2f} | {_hours(wall)} | {_hours(gpu)} |")
    done = sum(len(f) for f in cells.values())
    lines += ["", f"{done} of 60 runs done; {_hours(total_wall)} of wall time, "
              f"{_hours(total_gpu)} of GPU time, over {len(real)} GPU visit(s)"
              + (f" and {len(visits) - len(real)} dry run(s)" if len(visits) > len(real) else "")
              + ".", "", "## The paper's claims", "",
              "| Claim (paper) | Phantom | Reproduced? |", "| --- | --- | --- |"]
    lines += [f"| {c} | {seen} | {verdict} |" for c, seen, verdict in claims(cells, phantom)]
    path = campaign / "table1.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
