"""The Table 1 campaign's cells, their order, what is done and how long a run is expected to take.

A run is one model x loss x fold at the paper's settings on the 4,474-subject phantom; its folder
under the campaign's ``runs/`` is named ``<model>_<loss>_fold<k>`` and it is done once that
folder holds ``metrics.json``. The order: fold 0 of all 12 cells, then folds 1-4, each fold in
Table 1's order of models and losses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bone_age.bench.campaign.estimate import MARGIN, GpuRates, from_gpu_check
from bone_age.bench.campaign.runs import FOLDS, Run
from bone_age.evaluation.pooling import LOSS_ORDER, MODEL_ORDER
from bone_age.utils.errors import BoneAgeError, brief
from bone_age.utils.files import regular_file

# The small files of a run that a visit brings back (no checkpoints), and the run's config.
RUN_FILES = ("metrics.json", "predictions.csv", "history.csv", "calibration.json",
             ".hydra/config.yaml", ".hydra/overrides.yaml")
# Seconds a run is expected to take when neither the campaign's records nor the GPU check's
# rates (estimate.py) say more: the paper-scale multi_vgg16 + mv cell took 420 s with the
# phantom built inside it (2026-11, one H200), of which ~330 s without.
FIRST_GUESS_S = 330.0
# Models whose runs may share the one GPU in a visit (``visit --jobs K``): ResNet50 and
# InceptionV3 are launch-bound at batch 64 (8% and 3% MFU alone in the GPU check), so a second
# run can fill the GPU's idle gaps. VGG16 and the multiple-input VGG16 are compute-bound: they
# run alone (a run started beside one would only slow it), with compile if asked.
SHARES_GPU = frozenset({"resnet50", "inception"})
# Before the first visit measures it: each further run sharing the GPU adds this much of a
# run's time to every run's expected time (1.0: the GPU serialises them, the worst case).
SHARE_COST = 1.0


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


class CampaignError(BoneAgeError, ValueError):
    """A campaign file (``visits.json``, a visit's record) that is not what a visit writes;
    the message names the file and the field."""


# A visit's phantom: what table1.md prints of it (empty before the phantom is built).
PHANTOM_KEYS = ("version", "subjects", "bayes_mae_floor", "oracle_mae")


def _number(value: Any, low: float = 0.0, high: float = math.inf) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and low <= value <= high)


def check_visit(record: Any, where: str) -> dict[str, Any]:
    """``record`` if it is a visit's record as ``visit`` writes it; else CampaignError naming
    ``where`` (the file, and the visit) and the field. Every field the campaign reads later
    (``next``, ``table``) is checked here, once, so that a damaged record never ends in a
    traceback after something was written."""
    if not isinstance(record, dict):
        raise CampaignError(f"{where}: a visit's record is a JSON object, not a "
                            f"{type(record).__name__}")
    ident = record.get("id")
    # The id is printed and compared: one short printable line, as visit writes it (a stamp).
    if isinstance(ident, bool) or not isinstance(ident, (str, int)) or not (
            0 < len(str(ident)) <= 64 and str(ident).isprintable()):
        raise CampaignError(f"{where}: id {str(ident)[:70]!r} is not a visit's id (a short "
                            "line of text)")
    where = f"{where} (visit {ident})"
    if not isinstance(record.get("dry_run", False), bool):
        raise CampaignError(f"{where}: dry_run {record['dry_run']!r} is not true or false")
    runs = record.get("runs", [])
    if not isinstance(runs, list):
        raise CampaignError(f"{where}: runs is a {type(runs).__name__}, not a list")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise CampaignError(f"{where}: runs[{i}] is a {type(run).__name__}, not an object")
        name = run.get("name")
        if Run.parse(name) is None:
            raise CampaignError(f"{where}: runs[{i}].name {name!r} is not a campaign run")
        if not isinstance(run.get("finished"), bool):
            raise CampaignError(f"{where}: runs[{i}] ({name}).finished "
                                f"{run.get('finished')!r} is not true or false")
        if run["finished"] and not _number(run.get("wall_s"), 0.0, 1e9):
            raise CampaignError(f"{where}: runs[{i}] ({name}).wall_s {run.get('wall_s')!r} is "
                                "not a number of seconds")
        for key in ("epochs", "train_seconds"):  # the estimates read them (estimate.py)
            if run.get(key) is not None and not _number(run[key], 0.0, 1e9):
                raise CampaignError(f"{where}: runs[{i}] ({name}).{key} {run[key]!r} is not "
                                    "a number >= 0")
        # Sharing (visit --jobs): compared between visits to tell k runs at once from one.
        jobs = run.get("jobs", 1)
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise CampaignError(f"{where}: runs[{i}] ({name}).jobs {jobs!r} is not a count of "
                                "runs at once (>= 1)")
        overlapped = run.get("overlapped", [])
        if not isinstance(overlapped, list) or any(Run.parse(o) is None for o in overlapped):
            raise CampaignError(f"{where}: runs[{i}] ({name}).overlapped {overlapped!r} is not "
                                "a list of campaign runs")
        if "gpu_busy" in run and not _number(run["gpu_busy"], 0.0, 1.0):
            raise CampaignError(f"{where}: runs[{i}] ({name}).gpu_busy {run['gpu_busy']!r} "
                                "is not a share from 0 to 1")
    phantom = record.get("phantom", {})
    if not isinstance(phantom, dict):
        raise CampaignError(f"{where}: phantom is a {type(phantom).__name__}, not an object")
    if phantom:
        missing = [k for k in PHANTOM_KEYS if k not in phantom]
        if missing:
            raise CampaignError(f"{where}: phantom has no {', '.join(missing)}")
        for key in ("bayes_mae_floor", "oracle_mae"):
            if phantom[key] is not None and not _number(phantom[key]):
                raise CampaignError(f"{where}: phantom.{key} {phantom[key]!r} is not a number "
                                    ">= 0")
    return record


def read_visits(path: Path) -> list[dict[str, Any]]:
    """The campaign's visit records (``visits.json``), each checked (``check_visit``); empty
    before the first. CampaignError, one line naming the file, when it is damaged."""
    if not os.path.lexists(path):
        return []
    regular_file(path, "campaign's visits file", CampaignError)  # a FIFO would block
    try:
        visits = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise CampaignError(f"{path}: not UTF-8 (byte {err.start}); not the visits.json a "
                            "merge writes") from None
    except (ValueError, RecursionError) as err:  # RecursionError: brackets nested too deep
        raise CampaignError(f"{path}: not JSON ({brief(err)})") from None
    if not isinstance(visits, list):
        raise CampaignError(f"{path}: a {type(visits).__name__}, not the list of visits a "
                            "merge writes")
    return [check_visit(v, f"{path}, visit {i + 1}") for i, v in enumerate(visits)]


def run_records(visits: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each finished run's record (wall time, GPU busy share) by run name, latest visit last."""
    return {r["name"]: r for v in visits for r in v.get("runs", []) if r.get("finished")}


def expected_seconds(run: Run, records: dict[str, dict[str, Any]],
                     rates: GpuRates | None = None) -> tuple[float, str]:
    """How long ``run`` is expected to take, and from what: its model's slowest recorded run,
    else the GPU check's rate (``estimate.from_gpu_check``), else a first guess."""
    return estimates(run, records, rates)[0]


def estimates(run: Run, records: dict[str, dict[str, Any]],
              rates: GpuRates | None = None) -> list[tuple[float, str]]:
    """Every estimate of ``run``'s time there is, the one a visit uses first."""
    found: list[tuple[float, str]] = []
    same = [r["wall_s"] for name, r in records.items()
            if (p := Run.parse(name)) is not None and p.model == run.model]
    if same:
        found.append((max(same) * MARGIN,
                      f"slowest of {len(same)} recorded {run.model} run(s) x {MARGIN}"))
    gpu = from_gpu_check(run.model, run.loss, records, rates)
    if gpu is not None:
        found.append(gpu)
    if not found:
        found.append((FIRST_GUESS_S, "first guess (no run of this model recorded, no GPU check "
                                     "rate)"))
    return found


def may_share(run: Run, running: Iterable[Run]) -> bool:
    """Whether ``run`` may start beside ``running``: an empty GPU takes any run; otherwise both
    it and every running run must be of a launch-bound model (``SHARES_GPU``)."""
    running = list(running)
    return not running or (run.model in SHARES_GPU
                           and all(r.model in SHARES_GPU for r in running))


def shared_seconds(seconds: float, sharing: int, share_cost: float = SHARE_COST) -> float:
    """A run's expected time while ``sharing`` runs (itself included) share the GPU."""
    if sharing < 1 or not 0 <= share_cost <= 1:
        raise CampaignError(f"sharing {sharing} runs at share cost {share_cost}: need at least "
                            "1 run and a cost from 0 to 1")
    return seconds * (1 + (sharing - 1) * share_cost)

