"""A finished run read from its folder: ``metrics.json``, ``predictions.csv`` and its settings,
each file checked, into a ``FinishedRun``.

``read_metrics`` is the one reader of a ``metrics.json``: the Table 1 report, the campaign's
merge and (through it) resume read the file the same way, a FIFO or a damaged file refused in
one line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bone_age.evaluation.run_settings import experiment_settings
from bone_age.utils.errors import BoneAgeError, brief
from bone_age.utils.files import not_regular, regular_file

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
# A run's metrics.json is a few kB; anything far larger is not one (and is not read whole).
MAX_METRICS_BYTES = 16 * 2**20
# Every run of ``python -m bone_age.run`` writes its composed config here before it starts.
RUN_CONFIG_FILE = Path(".hydra") / "config.yaml"
MAX_FOLD = 9999  # fold numbers a metrics.json may hold (a site fold per site at most)
MAX_NESTING = 32  # levels of lists / objects in a metrics.json (a run writes 3 or 4)
# metrics.json keys of the run's identity, for runs written before settings were recorded (the
# model choice is part of every row's key already).
RUN_INFO_KEYS = ("backbone", "loss", "seed", "use_sex", "resize")
RUN_INFO_NAMES = {"backbone": "model.backbone", "loss": "loss.name", "use_sex": "model.use_sex",
                  "resize": "data.resize"}


class MetricsFileError(BoneAgeError, ValueError):
    """A metrics.json that is not a run's (the message says why, not where)."""


class RunFileError(BoneAgeError, ValueError):
    """A run's metrics.json or predictions.csv cannot be read (the run is left out)."""


@dataclass(frozen=True)
class FinishedRun:
    """One finished training run, as the report pools it.

    Args:
        dir: the run's folder.
        metrics: its ``metrics.json`` (checked by ``read_metrics``; ``fold`` a whole number).
        age, pred: the ages and predicted ages of its test fold (``predictions.csv``).
        settings: its settings (``experiment_settings``; recorded, or read from its config).
    """

    dir: Path
    metrics: dict[str, Any] = field(repr=False)
    age: np.ndarray = field(repr=False)
    pred: np.ndarray = field(repr=False)
    settings: dict[str, Any] = field(repr=False)

    @property
    def fold(self) -> int:
        return int(self.metrics["fold"])


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


def _is_finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's ``metrics.json``, checked as every reader needs it: a regular file (a FIFO would
    block the read forever) of at most ``MAX_METRICS_BYTES``, a JSON object nested at most
    ``MAX_NESTING`` levels (deeper would exhaust the stack of the comparisons of settings),
    its ``fold`` a fold number (returned as an int), ``train_mean_age`` and ``baseline_mae``
    finite numbers where present, ``settings`` a mapping where present.

    Args:
        path: the ``metrics.json`` file.

    Raises:
        MetricsFileError: why it is not a run's metrics (the message names no path).
        OSError: unreadable.
    """
    path = Path(path)
    why = not_regular(path)
    if why is not None:
        raise MetricsFileError(f"the metrics file {why}")
    if os.path.getsize(path) > MAX_METRICS_BYTES:
        raise MetricsFileError(f"{os.path.getsize(path):,} bytes, not a run's metrics")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise MetricsFileError(f"not JSON ({err})") from None
    except RecursionError:  # brackets nested deeper than the parser's stack (no run writes it)
        raise MetricsFileError("not JSON (JSON nested too deep to be a run's metrics)") from None
    if not isinstance(m, dict):
        raise MetricsFileError(f"holds a {type(m).__name__}, not a JSON object")
    if _nesting(m) > MAX_NESTING:
        raise MetricsFileError(f"not a run's metrics (JSON nested deeper than {MAX_NESTING} "
                               "levels)")
    fold = m.get("fold", 0)
    if isinstance(fold, bool) or not isinstance(fold, (int, float)) or not (
            math.isfinite(fold) and fold == int(fold) and 0 <= fold <= MAX_FOLD):
        raise MetricsFileError(f"fold {fold!r} is not a fold number (0..{MAX_FOLD})")
    m["fold"] = int(fold)
    for key in ("train_mean_age", "baseline_mae"):
        if key in m and not _is_finite(m[key]):
            raise MetricsFileError(f"{key} {m[key]!r} is not a finite number")
    if "settings" in m and not isinstance(m["settings"], dict):
        raise MetricsFileError(f"settings is a {type(m['settings']).__name__}, not a mapping "
                               "of setting names to values")
    return m


def read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A run's ``predictions.csv``: its ``age`` and ``pred_age`` columns, every value finite.

    Raises:
        RunFileError: naming the file (and the line) and what is wrong.
    """
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


def run_settings(metrics: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A finished run's settings: recorded in metrics.json (``settings``), else read from Hydra's
    ``.hydra/config.yaml`` beside it, else (older runs) its identity keys in metrics.json.

    Raises:
        RunFileError: the config beside it is not a run's configuration.
    """
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


def read_run(run_dir: Path) -> FinishedRun | None:
    """A finished run, each file checked; None for an evaluation's folder (no training run).

    Raises:
        RunFileError: naming the file and what is wrong with it.
        OSError: a file cannot be read.
    """
    path = run_dir / METRICS_FILE
    try:
        m = read_metrics(path)
    except MetricsFileError as err:
        raise RunFileError(f"{path}: {err}") from None
    if m.get("kind") == "evaluation":
        return None
    age, pred = read_predictions(run_dir / PREDICTIONS_FILE)
    return FinishedRun(run_dir, m, age, pred, run_settings(m, run_dir))


def unfinished_runs(root: Path) -> list[Path]:
    """Run folders below ``root`` (``root`` included) that started and wrote no ``metrics.json``:
    interrupted, failed or still running.

    Args:
        root: the folder searched.
    """
    return sorted(cfg.parent.parent for cfg in root.rglob(str(RUN_CONFIG_FILE))
                  if not (cfg.parent.parent / METRICS_FILE).exists())
