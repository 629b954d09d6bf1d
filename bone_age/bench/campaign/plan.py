"""The Table 1 campaign's cells, their order, what is done and how long a run is expected to take.

A run is one model x loss x fold at the paper's settings on the 4,474-subject phantom; its folder
under the campaign's ``runs/`` is named ``<model>_<loss>_fold<k>`` and it is done once that
folder holds ``metrics.json``. The order: fold 0 of all 12 cells, then folds 1-4, each fold in
Table 1's order of models and losses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bone_age.evaluation.report import LOSS_ORDER, MODEL_ORDER

FOLDS = 5
RUN_NAME = re.compile(r"^(?P<model>[a-z0-9_]+?)_(?P<loss>mse|softmax|mv)_fold(?P<fold>\d)$")
# The small files of a run that a visit brings back (no checkpoints), and the run's config.
RUN_FILES = ("metrics.json", "predictions.csv", "history.csv", "calibration.json",
             ".hydra/config.yaml", ".hydra/overrides.yaml")
# Seconds a run is expected to take before any of its model has been run: the paper-scale
# multi_vgg16 + mv cell took 420 s with the phantom built inside it (2026-11, one H200), of
# which ~330 s without; the other models are taken as no slower (a guess, replaced by the
# campaign's own records as soon as one run of the model is in).
FIRST_GUESS_S = 330.0
MARGIN = 1.15  # a run's expected time: its model's slowest recorded run x this


@dataclass(frozen=True)
class Run:
    """One run of the campaign."""

    model: str
    loss: str
    fold: int

    @property
    def name(self) -> str:
        return f"{self.model}_{self.loss}_fold{self.fold}"

    @classmethod
    def parse(cls, name: str) -> Run | None:
        m = RUN_NAME.match(name)
        if m is None or m["model"] not in MODEL_ORDER or int(m["fold"]) >= FOLDS:
            return None
        return cls(m["model"], m["loss"], int(m["fold"]))


def all_runs() -> list[Run]:
    """The 60 runs in campaign order."""
    return [Run(m, loss, f) for f in range(FOLDS) for m in MODEL_ORDER for loss in LOSS_ORDER]


def done_runs(runs_dir: Path) -> set[str]:
    """Names of the runs whose folder under ``runs_dir`` holds metrics.json."""
    if not runs_dir.is_dir():
        return set()
    return {p.parent.name for p in runs_dir.glob("*/metrics.json")
            if Run.parse(p.parent.name) is not None}


def next_runs(runs_dir: Path) -> list[Run]:
    """The unfinished runs, in campaign order."""
    done = done_runs(runs_dir)
    return [r for r in all_runs() if r.name not in done]


def read_visits(path: Path) -> list[dict[str, Any]]:
    """The campaign's visit records (``visits.json``); empty before the first."""
    if not path.is_file():
        return []
    visits = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(visits, list):
        raise ValueError(f"{path}: not a list of visits")
    return visits


def run_records(visits: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each finished run's record (wall time, GPU busy share) by run name, latest visit last."""
    return {r["name"]: r for v in visits for r in v.get("runs", []) if r.get("finished")}


def expected_seconds(run: Run, records: dict[str, dict[str, Any]]) -> tuple[float, str]:
    """How long ``run`` is expected to take, and from what."""
    same = [r["wall_s"] for name, r in records.items()
            if (p := Run.parse(name)) is not None and p.model == run.model]
    if same:
        return max(same) * MARGIN, f"slowest of {len(same)} recorded {run.model} run(s) x {MARGIN}"
    return FIRST_GUESS_S, "first guess (no run of this model recorded yet)"
