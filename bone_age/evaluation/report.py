"""Table 1 from a sweep: ``python -m bone_age.report DIR`` -> DIR/table1.md and DIR/table1.csv.

Every run below DIR that wrote ``metrics.json`` and ``predictions.csv`` is gathered. Each row is
one model and loss, laid out like the paper's Table 1: "MAE (SD)" and Pearson r computed on the
pooled out-of-fold predictions of all its folds, plus the per-fold mean +- SD of MAE and r.
Only runs that share every setting that changes the experiment are pooled (``experiment_settings``:
the run's whole configuration but its fold, file locations, speed, display and hardware layout);
when a folder mixes settings beyond model and loss, the rows are kept apart, labelled with the
settings that differ, and the report says so.
A leave-one-site-out sweep (``data.split=site``) also gets one row per held-out site and the
pooled row, in table1.md and DIR/table1_sites.csv. Figures go to DIR/figures/: the pooled
scatter of each cell and a bar chart of MAE over the grid.
With ``--wandb PROJECT`` (or a sweep run with ``logger=wandb``) Table 1 and the figures are also
logged to W&B as a ``report`` run in the sweep's group.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bone_age.evaluation import plots
from bone_age.evaluation.metrics import age_metrics, baseline_mae
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.console import plural
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL, BoneAgeError, brief, command, fail
from bone_age.utils.files import regular_file
from bone_age.utils.outputs import write_text_atomic
from bone_age.utils.tables import write_csv

log = logging.getLogger(__name__)

MODEL_ORDER = ["inception", "resnet50", "vgg16", "multi_vgg16"]
MODEL_NAMES = {"inception": "InceptionV3", "resnet50": "ResNet50", "vgg16": "VGG16",
               "multi_vgg16": "Multiple inputs VGG16"}
LOSS_ORDER = ["mse", "softmax", "mv"]
LOSS_NAMES = {"mse": "Mean squared loss", "softmax": "Softmax loss",
              "mv": "Softmax + Mean-Variance loss"}
DEFAULT_BACKBONES = {"inception": "inception_v3", "resnet50": "resnet50", "vgg16": "vgg16",
                     "multi_vgg16": "vgg16"}


# Configuration keys (and key prefixes) that do not change what a run computes: the fold (the one
# key a pooled row spans), where files are (the manifest is compared by content), speed and
# display switches, loggers, the hardware layout and the preset's name (the settings it sets are
# compared themselves).
NOT_SETTINGS = (
    "data.fold", "data.num_workers", "data.cache_workers", "data.progress", "data.cache_dir",
    "data.phantom_dir", "data.strict", "data.source.path", "data.source.root",
    "trainer.accelerator", "trainer.devices", "trainer.num_nodes", "trainer.strategy",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.log_every_n_steps",
    "trainer.default_root_dir", "trainer.deterministic", "trainer.benchmark",
    "trainer.plugins", "experiment", "paths", "logger", "hydra", "speed", "resume", "slurm",
    "callbacks", "results", "threads", "yes",
)
# Settings that the rows' names show already (model, trunk, loss, sex input, 4:1 aspect).
ROW_NAME_SETTINGS = frozenset({"model.views", "data.views", "model.backbone", "model.use_sex",
                               "loss.name", "data.resize"})
# metrics.json keys of the run's identity, for runs written before settings were recorded (the
# model choice is part of every row's key already).
RUN_INFO_KEYS = ("backbone", "loss", "seed", "use_sex", "resize")
RUN_INFO_NAMES = {"backbone": "model.backbone", "loss": "loss.name", "use_sex": "model.use_sex",
                  "resize": "data.resize"}
UNSET = "(unset)"
MAX_FOLD = 9999  # fold numbers a metrics.json may hold (a site fold per site at most)
MAX_NESTING = 32  # levels of lists / objects in a metrics.json (a run writes 3 or 4)


def _ignored(name: str) -> bool:
    return any(name == k or name.startswith(k + ".") for k in NOT_SETTINGS)


def experiment_settings(config: DictConfig | dict) -> dict[str, Any]:
    """The settings of a run that change its results, flattened to dotted keys.

    Args:
        config: a run's configuration (the sections ``RunConfig`` logs, or Hydra's
            ``.hydra/config.yaml``). Keys in ``NOT_SETTINGS`` are left out before they are read;
            interpolations are resolved where they can be (else kept as written).
    """
    if not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    out: dict[str, Any] = {}

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            if _ignored(name) or OmegaConf.is_missing(node, key):
                continue
            if key == "_target_":  # where a class lives is no setting; which loss it is, is
                if name == "loss._target_":
                    out["loss.name"] = _loss_name(node[key])
                continue
            try:
                value = node[key]
            except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra job
                value = OmegaConf.to_container(node, resolve=False)[key]
            if isinstance(value, DictConfig) and len(value):
                walk(value, name + ".")
            elif isinstance(value, (DictConfig, ListConfig)):
                try:
                    out[name] = OmegaConf.to_container(value, resolve=True)
                except OmegaConfBaseException:
                    out[name] = OmegaConf.to_container(value, resolve=False)
            else:
                out[name] = value

    walk(config, "")
    return out


def _loss_name(target: str) -> str:
    """The registered name of the loss class ``target`` (the path itself where it is unknown)."""
    from bone_age.losses import LOSSES

    by_class = {f"{cls.__module__}.{cls.__qualname__}": name for name, cls in LOSSES.items()}
    by_class.update({f"bone_age.losses.{cls.__qualname__}": name for name, cls in LOSSES.items()})
    return by_class.get(str(target), str(target))


def run_settings(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A finished run's settings: recorded in metrics.json (``settings``), else read from Hydra's
    ``.hydra/config.yaml`` beside it, else (older runs) its identity keys in metrics.json."""
    if isinstance(metrics.get("settings"), dict):
        return metrics["settings"]
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        try:
            config = OmegaConf.load(hydra_config)
            if not isinstance(config, DictConfig):
                raise TypeError(f"holds a {type(config).__name__}, not a mapping")
            early = OmegaConf.select(config, "callbacks.early_stopping")
            return experiment_settings({**{k: config[k] for k in config if k != "callbacks"},
                                        "early_stopping": early})
        except (OmegaConfBaseException, yaml.YAMLError, UnicodeDecodeError, TypeError,
                RecursionError, ValueError) as err:  # RecursionError: nested too deep
            raise RunFileError(f"{hydra_config}: not a run's settings ({brief(err)})") from None
    return {RUN_INFO_NAMES.get(k, k): metrics[k] for k in RUN_INFO_KEYS if k in metrics}


class RunFileError(BoneAgeError, ValueError):
    """A run's metrics.json or predictions.csv cannot be read (the run is left out)."""


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    regular_file(path, "predictions file", RunFileError)  # a FIFO would block the report
    try:
        return _prediction_columns(path)
    except UnicodeDecodeError as err:
        raise RunFileError(f"{path}: not UTF-8 (byte {err.start}); not a predictions.csv "
                           "this project wrote") from None
    except csv.Error as err:
        raise RunFileError(f"{path}: not a CSV file ({err})") from None


def _prediction_columns(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"age", "pred_age"} - set(reader.fieldnames or [])
        if missing:
            raise RunFileError(f"{path}: no {', '.join(sorted(missing))} column")
        values = {"age": [], "pred_age": []}
        for line, row in enumerate(reader, start=2):
            for key, column in values.items():
                try:
                    value = float(row[key])
                except (TypeError, ValueError):
                    raise RunFileError(f"{path}, line {line}: {key} {row[key]!r} is not a "
                                       "number") from None
                if not math.isfinite(value):  # a diverged run: never pooled
                    raise RunFileError(f"{path}, line {line}: {key} {row[key]!r} is not a "
                                       "finite number")
                column.append(value)
    if not values["age"]:
        raise RunFileError(f"{path}: no predictions in it (a header only)")
    return np.array(values["age"]), np.array(values["pred_age"])


def _nesting(value: Any) -> int:
    """How deep lists and objects nest in a JSON value (iterative: no recursion to exhaust)."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            todo.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                 else item))
    return deepest


def _read_metrics(path: Path) -> dict[str, Any]:
    regular_file(path, "metrics file", RunFileError)  # a FIFO would block the report
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise RunFileError(f"{path}: not JSON ({err})") from None
    except RecursionError:  # brackets nested deeper than the parser's stack (no run writes it)
        raise RunFileError(f"{path}: not a run's metrics (JSON nested too deep)") from None
    if not isinstance(m, dict):
        raise RunFileError(f"{path}: not a JSON object")
    if _nesting(m) > MAX_NESTING:  # would exhaust the stack of the comparisons below
        raise RunFileError(f"{path}: not a run's metrics (JSON nested deeper than "
                           f"{MAX_NESTING} levels)")
    fold = m.get("fold", 0)
    if isinstance(fold, bool) or not isinstance(fold, (int, float)) or not (
            math.isfinite(fold) and fold == int(fold) and 0 <= fold <= MAX_FOLD):
        raise RunFileError(f"{path}: fold {fold!r} is not a fold number (0..{MAX_FOLD})")
    m["fold"] = int(fold)
    for key in ("train_mean_age", "baseline_mae"):
        if key in m and (isinstance(m[key], bool) or not isinstance(m[key], (int, float))
                         or not math.isfinite(m[key])):
            raise RunFileError(f"{path}: {key} {m[key]!r} is not a finite number")
    if "settings" in m and not isinstance(m["settings"], dict):
        raise RunFileError(f"{path}: settings is a {type(m['settings']).__name__}, not a "
                           "mapping of setting names to values")
    return m


def read_run(run_dir: Path) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray],
                                     dict[str, Any]] | None:
    """A finished run's metrics, (ages, predictions) and settings, each file checked
    (RunFileError naming the file); None for an evaluation's folder (no training run)."""
    m = _read_metrics(run_dir / "metrics.json")
    if m.get("kind") == "evaluation":
        return None
    return m, _read_predictions(run_dir / "predictions.csv"), run_settings(m, run_dir)


def collect_runs(root: Path, left_out: list[str] | None = None
                 ) -> dict[tuple[str, ...], dict[int, dict[str, Any]]]:
    """Runs by (model, backbone, loss, settings), then fold; a repeated fold keeps the newest run.

    ``settings`` is the run's ``experiment_settings`` as canonical JSON: runs that differ in any
    of them are never pooled. A damaged run is named in a warning, added to ``left_out`` and
    left out.
    """
    left_out = [] if left_out is None else left_out
    cells: dict[tuple[str, ...], dict[int, dict[str, Any]]] = defaultdict(dict)
    for metrics_file in sorted(root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):
        preds_file = metrics_file.with_name("predictions.csv")
        if not preds_file.exists():
            log.warning("%s: no predictions.csv beside it, left out", metrics_file.parent)
            left_out.append(str(metrics_file.parent))
            continue
        try:
            read = read_run(metrics_file.parent)
            if read is None:
                log.info("%s: an evaluation of a trained model, not a training run; left out",
                         metrics_file.parent)
                continue
            m, (age, pred), settings = read
        except (RunFileError, OSError) as err:
            log.warning("%s; run left out", err)
            left_out.append(str(metrics_file.parent))
            continue
        # Variants beyond the paper get rows of their own.
        extras = ["sex"] * bool(m.get("use_sex")) + ["4:1 aspect"] * (m.get("resize") == "pad")
        model = " + ".join([str(m.get("model")), *extras])
        key = (model, str(m.get("backbone")), str(m.get("loss")),
               json.dumps(settings, sort_keys=True, default=str))
        fold = m["fold"]
        if fold in cells[key]:
            log.warning("%s fold %d appears twice; the newer run %s is used",
                        "/".join(key[:3]), fold, metrics_file.parent)
        cells[key][fold] = {"metrics": m, "age": age, "pred": pred, "dir": metrics_file.parent,
                            "settings": settings}
    return cells


def _own_loss_parameter(name: str) -> bool:
    """A setting that only some losses have (``loss.lambda_mean`` of mv): part of that loss's
    row identity, compared between runs of that loss only. The age range, which every loss has,
    is compared across all runs."""
    from bone_age.losses import AgeLoss

    shared = {f.name for f in dataclasses.fields(AgeLoss)} | {"name"}
    return name.startswith("loss.") and name.removeprefix("loss.") not in shared


def differing_settings(cells: dict) -> tuple[list[str], dict[tuple[str, ...], str]]:
    """The settings (beyond what the rows' names show) that differ between the folder's cells,
    and each cell's label of their values ("" for every cell when none differ)."""
    settings = {key: next(iter(folds.values()))["settings"] for key, folds in cells.items()}
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


def _cell_name(key: tuple[str, ...]) -> str:
    model, backbone, loss = key[:3]
    base, _, extra = model.partition(" + ")
    name = MODEL_NAMES.get(base, base) + (f" + {extra}" if extra else "")
    if backbone != DEFAULT_BACKBONES.get(base, backbone):
        name += f" [{backbone}]"
    return f"{name}, {LOSS_NAMES.get(loss, loss)}"


def warn_mixed(root: Path, cells: dict) -> list[str]:
    """Log (and return) one line per row naming its settings, when a folder mixes settings."""
    differ, labels = differing_settings(cells)
    if not differ:
        return []
    lines = [f"runs differ in {', '.join(differ)}; they are not pooled, one row per setting:"]
    lines += [f"  {_cell_name(key)}: {labels[key]} ({plural(len(cells[key]), 'fold')})"
              for key in cells]
    log.warning("%s: %s", root, "\n".join(lines))
    return lines


def summarise(cells: dict) -> list[dict[str, Any]]:
    rows = []
    _, labels = differing_settings(cells)

    def order(key):
        model, _, loss = key[:3]
        return (MODEL_ORDER.index(model) if model in MODEL_ORDER else 99, model,
                LOSS_ORDER.index(loss) if loss in LOSS_ORDER else 99, key[1], labels[key])
    for key in sorted(cells, key=order):
        model, backbone, loss = key[:3]
        folds = cells[key]
        age = np.concatenate([f["age"] for f in folds.values()])
        pred = np.concatenate([f["pred"] for f in folds.values()])
        pooled = age_metrics(pred, age)
        per_fold = [age_metrics(f["pred"], f["age"]) for f in folds.values()]
        fold_mae = np.array([m["mae"] for m in per_fold])
        fold_r = np.array([m["pearson_r"] for m in per_fold])
        base, _, extra = model.partition(" + ")
        name = MODEL_NAMES.get(base, base) + (f" + {extra}" if extra else "")
        if backbone != DEFAULT_BACKBONES.get(base, backbone):
            name += f" [{backbone}]"
        rows.append({
            "key": key,
            "model": name, "loss": LOSS_NAMES.get(loss, loss), "settings": labels[key],
            "folds": len(folds),
            "n": len(age), "mae": pooled["mae"], "mae_sd": pooled["mae_sd"],
            "r": pooled["pearson_r"],
            "fold_mae_mean": float(fold_mae.mean()), "fold_mae_sd": float(fold_mae.std(ddof=1))
            if len(fold_mae) > 1 else 0.0,
            "fold_r_mean": float(np.nanmean(fold_r)) if np.isfinite(fold_r).any() else np.nan,
            "fold_r_sd": float(np.nanstd(fold_r, ddof=1)) if np.isfinite(fold_r).sum() > 1
            else 0.0,
            "baseline_mae": float(np.mean([_fold_baseline(f) for f in folds.values()])),
            **_versus_baseline(folds),
        })
    return rows


# A cell learned something only if its MAE is below the baseline's beyond chance: the 95%
# percentile-bootstrap interval (subjects resampled, paired: each subject's error minus the
# baseline's on the same subject) of MAE - baseline MAE lies wholly below 0. A seeded bootstrap,
# so a table is the same every time it is written.
BOOTSTRAP_RESAMPLES = 2000
NOT_LEARNED_MARK = "†"


def _versus_baseline(folds: dict[Any, dict[str, Any]]) -> dict[str, Any]:
    """``vs_baseline_low`` / ``_high`` (years; the interval of MAE - baseline MAE) and
    ``below_baseline`` (False: not below the baseline by that interval; the cell learned
    nothing that can be told from predicting the training mean age)."""
    from scipy.stats import bootstrap

    gains = []
    for fold in folds.values():
        m = fold["metrics"]
        if "train_mean_age" not in m:  # runs before train_mean_age was recorded
            return {"vs_baseline_low": math.nan, "vs_baseline_high": math.nan,
                    "below_baseline": ""}
        gains.append(np.abs(fold["pred"] - fold["age"])
                     - np.abs(float(m["train_mean_age"]) - fold["age"]))
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


def _fold_baseline(fold: dict[str, Any]) -> float:
    """The fold's baseline MAE from its predictions.csv ages and its training mean age (runs
    written before train_mean_age was recorded: the baseline they stored)."""
    m = fold["metrics"]
    if "train_mean_age" in m:
        return baseline_mae(fold["age"], m["train_mean_age"])
    return float(m.get("baseline_mae", np.nan))


def site_rows(cells: dict, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Leave-one-site-out cells (every fold's metrics.json names its held-out ``test_site``):
    one row per held-out site, then the pooled row of the cell (its Table 1 row)."""
    out = []
    for r in rows:
        folds = cells[r["key"]]
        if not all(f["metrics"].get("split") == "site" for f in folds.values()):
            continue
        for fold in sorted(folds.values(), key=lambda f: str(f["metrics"].get("test_site"))):
            m = age_metrics(fold["pred"], fold["age"])
            out.append({"model": r["model"], "loss": r["loss"], "settings": r["settings"],
                        "site": str(fold["metrics"].get("test_site", "")), "n": len(fold["age"]),
                        "mae": m["mae"], "mae_sd": m["mae_sd"], "r": m["pearson_r"],
                        "baseline_mae": _fold_baseline(fold)})
        out.append({"model": r["model"], "loss": r["loss"], "settings": r["settings"],
                    "site": f"pooled ({plural(len(folds), 'site')})", "n": r["n"], "mae": r["mae"],
                    "mae_sd": r["mae_sd"], "r": r["r"], "baseline_mae": r["baseline_mae"]})
    return out


def _site_section(by_site: list[dict[str, Any]]) -> str:
    lines = ["", "Leave-one-site-out (data.split=site): each row tests one site on a model "
             "trained on the others; pooled: all held-out sites together.", "",
             "| Model | Method | held-out site | n | MAE (SD), years | r | baseline MAE |",
             "|---|---|---|---|---|---|---|"]
    for r in by_site:
        method = r["loss"] + (f" ({r['settings']})" if r["settings"] else "")
        lines.append(f"| {r['model']} | {method} | {r['site']} | {r['n']} | {r['mae']:.2f} "
                     f"({r['mae_sd']:.2f}) | {r['r']:.2f} | {r['baseline_mae']:.2f} |")
    return "\n".join(lines) + "\n"


def write_table(
    rows: list[dict[str, Any]], out_dir: Path, mixed: Sequence[str] = (),
    by_site: Sequence[dict[str, Any]] = (),
) -> tuple[Path, Path]:
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
        method = r["loss"] + (f" ({r['settings']})" if r["settings"] else "")
        mark = NOT_LEARNED_MARK if r.get("below_baseline") is False else ""
        lines.append(
            f"| {model} | {method} | {r['mae']:.2f} ({r['mae_sd']:.2f}){mark} | {r['r']:.2f} | "
            f"{r['folds']} | {r['n']} | {r['fold_mae_mean']:.2f} ± {r['fold_mae_sd']:.2f} | "
            f"{r['fold_r_mean']:.2f} ± {r['fold_r_sd']:.2f} | {r['baseline_mae']:.2f} |"
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
    table = _public(rows)
    write_csv(csv_path, list(table[0]) if table else ["model"], table)
    return md, csv_path


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's columns (without the internal cell key)."""
    return [{k: v for k, v in r.items() if k != "key"} for r in rows]


def write_figures(cells: dict, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Pooled out-of-fold scatter per Table 1 cell, and the MAE bar chart of the grid."""
    # Rows that differ in settings only get bars of their own, named by those settings.
    bars = [{**r, "model": r["model"] + (f" ({r['settings']})" if r["settings"] else "")}
            for r in rows]
    figures = {"mae_by_cell": plots.mae_grid_plot(bars, out_dir / "mae_by_cell.png")}
    for r in rows:
        folds = cells[r["key"]]
        age = np.concatenate([f["age"] for f in folds.values()])
        pred = np.concatenate([f["pred"] for f in folds.values()])
        name = "scatter_" + "_".join(r["key"][:3])
        if r["settings"]:  # cells differing only in settings get files of their own
            name += "_" + hashlib.blake2b(r["settings"].encode(), digest_size=4).hexdigest()
        figures[name] = plots.cell_scatter_plot(
            age, pred, out_dir / f"{name}.png", f"{r['model']}, {r['loss']}", len(folds))
    return figures


def report(root: str | Path, wandb_project: str | None = None,
           left_out: list[str] | None = None) -> Path | None:
    """Gather the runs below ``root`` into its Table 1 and figures; returns the markdown file.

    ``wandb_project``: also log Table 1 and the figures to that W&B project; ``left_out``
    receives the damaged runs (named in warnings, not pooled).
    """
    root = Path(root)
    cells = collect_runs(root, left_out)
    if not cells:
        log.warning("%s: no finished runs (metrics.json + predictions.csv) found", root)
        return None
    mixed = warn_mixed(root, cells)
    rows = summarise(cells)
    unlearned = not_learned(rows)
    if unlearned:  # a table that learned nothing must not look publishable
        log.warning("%s: %d of %d Table 1 cells are not below the baseline (MAE %s vs "
                    "baseline %.2f y; 95%% bootstrap interval of the difference reaches 0): "
                    "they learned nothing measurable; marked %s in table1.md, below_baseline="
                    "False in table1.csv, hatched in the figure", root, len(unlearned),
                    len(rows), ", ".join(f"{r['mae']:.2f}" for r in unlearned[:6])
                    + (", ..." if len(unlearned) > 6 else ""),
                    float(np.mean([r["baseline_mae"] for r in unlearned])), NOT_LEARNED_MARK)
    md, _ = write_table(rows, root, mixed, site_rows(cells, rows))
    figures = write_figures(cells, rows, root / "figures")
    if wandb_project:
        from bone_age.evaluation.tracking import log_table1

        log_table1(_public(rows), figures, root, wandb_project)
    return md


class ReportCallback(Callback):
    """Hydra callback: writes Table 1 and its figures into the sweep folder when a multirun
    ends, and logs them to W&B when the sweep used ``logger=wandb``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        project = OmegaConf.select(config, "logger.wandb.project", default=None)
        md = report(config.hydra.sweep.dir, project)
        if md is not None:
            print(f"\nTable 1 ({md}):\n{md.read_text()}")


@command("report")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bone_age.report", description=__doc__)
    parser.add_argument("dir", type=Path, help="a sweep (or any) folder holding finished runs")
    parser.add_argument("--wandb", metavar="PROJECT",
                        help="also log Table 1 and the figures to this W&B project")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        return fail("report", f"{args.dir}: not a folder")
    left_out: list[str] = []
    md = report(args.dir, args.wandb, left_out)
    if md is None:
        print(f"bone-age report: no finished runs below {args.dir}", file=sys.stderr)
        return EXIT_PARTIAL
    print(md.read_text())
    if left_out:  # the table holds the other runs; the warnings above name these
        print(f"bone-age report: {plural(len(left_out), 'damaged run')} left out of the table",
              file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
