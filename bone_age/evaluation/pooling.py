"""Runs pooled into Table 1's cells and rows.

A cell is one model and loss of one experiment: the runs below a folder that share every
setting that changes results (``run_settings.experiment_settings``), one per fold. A cell's row
holds "MAE (SD)" and Pearson r of the pooled out-of-fold predictions of its folds, the per-fold
mean +- SD of MAE and r, the baseline (each fold's training mean age) and whether the cell is
below that baseline beyond chance. When a folder mixes settings beyond model and loss, the rows
are kept apart, labelled with the settings that differ.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.evaluation.metrics import age_metrics, baseline_mae
from bone_age.evaluation.run_files import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    FinishedRun,
    RunFileError,
    read_run,
    unfinished_runs,
)
from bone_age.evaluation.run_settings import UNSET
from bone_age.utils.console import plural

log = logging.getLogger(__name__)

MODEL_ORDER = ["inception", "resnet50", "vgg16", "multi_vgg16"]
MODEL_NAMES = {"inception": "InceptionV3", "resnet50": "ResNet50", "vgg16": "VGG16",
               "multi_vgg16": "Multiple inputs VGG16"}
LOSS_ORDER = ["mse", "softmax", "mv"]
LOSS_NAMES = {"mse": "Mean squared loss", "softmax": "Softmax loss",
              "mv": "Softmax + Mean-Variance loss"}
DEFAULT_BACKBONES = {"inception": "inception_v3", "resnet50": "resnet50", "vgg16": "vgg16",
                     "multi_vgg16": "vgg16"}
# Settings that the rows' names show already (model, trunk, loss, sex input, 4:1 aspect).
ROW_NAME_SETTINGS = frozenset({"model.views", "data.views", "model.backbone", "model.use_sex",
                               "loss.name", "data.resize"})

# A cell: (model with its variants, backbone, loss, settings as canonical JSON).
CellKey = tuple[str, ...]
Cells = dict[CellKey, dict[int, FinishedRun]]

# A cell learned something only if its MAE is below the baseline's beyond chance: the 95%
# percentile-bootstrap interval (subjects resampled, paired: each subject's error minus the
# baseline's on the same subject) of MAE - baseline MAE lies wholly below 0. A seeded bootstrap,
# so a table is the same every time it is written.
BOOTSTRAP_RESAMPLES = 2000


def collect_runs(root: Path, left_out: list[str] | None = None,
                 unfinished: list[str] | None = None) -> Cells:
    """Runs by (model, backbone, loss, settings), then fold; a repeated fold keeps the newest run.

    ``settings`` is the run's ``experiment_settings`` as canonical JSON: runs that differ in any
    of them are never pooled. A damaged run is named in a warning, added to ``left_out`` and
    left out; so is a run folder that started and wrote no results (to ``unfinished``).

    Args:
        root: the folder searched (below it) for runs' ``metrics.json``.
        left_out: receives the folders of the damaged runs.
        unfinished: receives the folders of the unfinished runs.
    """
    left_out = [] if left_out is None else left_out
    cells: Cells = defaultdict(dict)
    started = unfinished_runs(root)
    if started:  # an interrupted sweep: its table is partial, and says so
        shown = [str(d.relative_to(root)) for d in started]
        log.warning("%s: %s without results (interrupted, failed or still running), left out: "
                    "%s", root, plural(len(started), "run folder"),
                    ", ".join(shown[:8]) + (", ..." if len(shown) > 8 else ""))
        if unfinished is not None:
            unfinished.extend(str(d) for d in started)
    for metrics_file in sorted(root.rglob(METRICS_FILE), key=lambda p: p.stat().st_mtime):
        if not metrics_file.with_name(PREDICTIONS_FILE).exists():
            log.warning("%s: no predictions.csv beside it, left out", metrics_file.parent)
            left_out.append(str(metrics_file.parent))
            continue
        try:
            run = read_run(metrics_file.parent)
            if run is None:
                log.info("%s: an evaluation of a trained model, not a training run; left out",
                         metrics_file.parent)
                continue
        except (RunFileError, OSError) as err:
            log.warning("%s; run left out", err)
            left_out.append(str(metrics_file.parent))
            continue
        m = run.metrics
        # Variants beyond the paper get rows of their own.
        extras = ["sex"] * bool(m.get("use_sex")) + ["4:1 aspect"] * (m.get("resize") == "pad")
        model = " + ".join([str(m.get("model")), *extras])
        key = (model, str(m.get("backbone")), str(m.get("loss")),
               json.dumps(run.settings, sort_keys=True, default=str))
        if run.fold in cells[key]:
            log.warning("%s fold %d appears twice; the newer run %s is used",
                        "/".join(key[:3]), run.fold, metrics_file.parent)
        cells[key][run.fold] = run
    return cells


def model_label(key: CellKey) -> str:
    """A cell's model as its row names it: the paper's name, its variants, a trunk other than
    the model's own in brackets (``VGG16 + sex [resnet18]``)."""
    model, backbone = key[:2]
    base, _, extra = model.partition(" + ")
    name = MODEL_NAMES.get(base, base) + (f" + {extra}" if extra else "")
    if backbone != DEFAULT_BACKBONES.get(base, backbone):
        name += f" [{backbone}]"
    return name


def loss_label(key: CellKey) -> str:
    """A cell's loss as its row names it (the paper's name)."""
    return LOSS_NAMES.get(key[2], key[2])


def _own_loss_parameter(name: str) -> bool:
    """A setting that only some losses have (``loss.lambda_mean`` of mv): part of that loss's
    row identity, compared between runs of that loss only. The age range, which every loss has,
    is compared across all runs."""
    from bone_age.losses import AgeLoss

    shared = {f.name for f in dataclasses.fields(AgeLoss)} | {"name"}
    return name.startswith("loss.") and name.removeprefix("loss.") not in shared


def differing_settings(cells: Cells) -> tuple[list[str], dict[CellKey, str]]:
    """The settings (beyond what the rows' names show) that differ between the folder's cells,
    and each cell's label of their values ("" for every cell when none differ)."""
    settings = {key: next(iter(folds.values())).settings for key, folds in cells.items()}
    names = {k for s in settings.values() for k in s} - ROW_NAME_SETTINGS
    # A setting repeated by interpolation (seed and data.seed, augment.* and data.augment.*)
    # differs alike in every cell: it is named once, by its shortest key.
    named: dict[tuple, str] = {}
    labelled: dict[str, set] = {}  # setting -> the cells whose label names it
    for k in sorted(names, key=lambda k: (k.count("."), k)):
        value = {c: json.dumps(s.get(k, UNSET), sort_keys=True, default=str)
                 for c, s in settings.items()}
        # A loss's own parameter is compared among the runs of that loss only (cell key[2]).
        group = (lambda c: c[2]) if _own_loss_parameter(k) else (lambda c: None)
        differs = {c for c in settings
                   if len({value[o] for o in settings if group(o) == group(c)}) > 1}
        if differs:
            kept = named.setdefault((k.rsplit(".", 1)[-1], tuple(value.values())), k)
            labelled.setdefault(kept, set()).update(differs)
    differ = sorted(named.values())
    labels = {key: ", ".join(f"{k}={json.dumps(s.get(k, UNSET), default=str)}" for k in differ
                             if key in labelled[k])
              for key, s in settings.items()}
    return differ, labels


def warn_mixed(root: Path, cells: Cells) -> list[str]:
    """Log (and return) one line per row naming its settings, when a folder mixes settings."""
    differ, labels = differing_settings(cells)
    if not differ:
        return []
    lines = [f"runs differ in {', '.join(differ)}; they are not pooled, one row per setting:"]
    lines += [f"  {model_label(key)}, {loss_label(key)}: {labels[key]} "
              f"({plural(len(cells[key]), 'fold')})" for key in cells]
    log.warning("%s: %s", root, "\n".join(lines))
    return lines


def pooled_predictions(folds: dict[int, FinishedRun]) -> tuple[np.ndarray, np.ndarray]:
    """The cell's ages and predictions, all its folds together."""
    return (np.concatenate([f.age for f in folds.values()]),
            np.concatenate([f.pred for f in folds.values()]))


def summarise(cells: Cells) -> list[dict[str, Any]]:
    """Table 1's rows, one per cell, in the paper's order (models, then losses); each holds
    its cell's ``key`` (not a column of the table)."""
    rows = []
    _, labels = differing_settings(cells)

    def order(key):
        model, _, loss = key[:3]
        return (MODEL_ORDER.index(model) if model in MODEL_ORDER else 99, model,
                LOSS_ORDER.index(loss) if loss in LOSS_ORDER else 99, key[1], labels[key])
    for key in sorted(cells, key=order):
        folds = cells[key]
        age, pred = pooled_predictions(folds)
        pooled = age_metrics(pred, age)
        per_fold = [age_metrics(f.pred, f.age) for f in folds.values()]
        fold_mae = np.array([m["mae"] for m in per_fold])
        fold_r = np.array([m["pearson_r"] for m in per_fold])
        rows.append({
            "key": key,
            "model": model_label(key), "loss": loss_label(key), "settings": labels[key],
            "folds": len(folds),
            "n": len(age), "mae": pooled["mae"], "mae_sd": pooled["mae_sd"],
            "r": pooled["pearson_r"],
            "fold_mae_mean": float(fold_mae.mean()), "fold_mae_sd": float(fold_mae.std(ddof=1))
            if len(fold_mae) > 1 else 0.0,
            "fold_r_mean": float(np.nanmean(fold_r)) if np.isfinite(fold_r).any() else np.nan,
            "fold_r_sd": float(np.nanstd(fold_r, ddof=1)) if np.isfinite(fold_r).sum() > 1
            else 0.0,
            "baseline_mae": float(np.mean([fold_baseline(f) for f in folds.values()])),
            **_versus_baseline(folds),
        })
    return rows


def _versus_baseline(folds: dict[int, FinishedRun]) -> dict[str, Any]:
    """``vs_baseline_low`` / ``_high`` (years; the interval of MAE - baseline MAE) and
    ``below_baseline`` (False: not below the baseline by that interval; the cell learned
    nothing that can be told from predicting the training mean age)."""
    from scipy.stats import bootstrap

    gains = []
    for fold in folds.values():
        if "train_mean_age" not in fold.metrics:  # runs before train_mean_age was recorded
            return {"vs_baseline_low": math.nan, "vs_baseline_high": math.nan,
                    "below_baseline": ""}
        gains.append(np.abs(fold.pred - fold.age)
                     - np.abs(float(fold.metrics["train_mean_age"]) - fold.age))
    diff = np.concatenate(gains)
    if len(diff) < 2 or np.ptp(diff) == 0:
        low = high = float(diff.mean()) if len(diff) else math.nan
    else:
        res = bootstrap((diff,), np.mean, confidence_level=0.95,
                        n_resamples=BOOTSTRAP_RESAMPLES, method="percentile", random_state=0)
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"vs_baseline_low": low, "vs_baseline_high": high,
            "below_baseline": bool(high < 0) if math.isfinite(high) else ""}


def not_learned(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The cells whose MAE is not below the baseline by their bootstrap interval."""
    return [r for r in rows if r.get("below_baseline") is False]


def fold_baseline(fold: FinishedRun) -> float:
    """The fold's baseline MAE from its predictions.csv ages and its training mean age (runs
    written before train_mean_age was recorded: the baseline they stored)."""
    if "train_mean_age" in fold.metrics:
        return baseline_mae(fold.age, fold.metrics["train_mean_age"])
    return float(fold.metrics.get("baseline_mae", np.nan))


def site_rows(cells: Cells, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave-one-site-out cells (every fold's metrics.json names its held-out ``test_site``):
    one row per held-out site, then the pooled row of the cell (its Table 1 row)."""
    out = []
    for r in rows:
        folds = cells[r["key"]]
        if not all(f.metrics.get("split") == "site" for f in folds.values()):
            continue
        for fold in sorted(folds.values(), key=lambda f: str(f.metrics.get("test_site"))):
            m = age_metrics(fold.pred, fold.age)
            out.append({"model": r["model"], "loss": r["loss"], "settings": r["settings"],
                        "site": str(fold.metrics.get("test_site", "")), "n": len(fold.age),
                        "mae": m["mae"], "mae_sd": m["mae_sd"], "r": m["pearson_r"],
                        "baseline_mae": fold_baseline(fold)})
        out.append({"model": r["model"], "loss": r["loss"], "settings": r["settings"],
                    "site": f"pooled ({plural(len(folds), 'site')})", "n": r["n"], "mae": r["mae"],
                    "mae_sd": r["mae_sd"], "r": r["r"], "baseline_mae": r["baseline_mae"]})
    return out
