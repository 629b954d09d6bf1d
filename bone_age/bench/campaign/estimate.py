"""How long a campaign run is expected to take, from measurements.

Before a run of a model is recorded, its time is estimated from the recorded GPU check
(``experiments/gpu/results.json``: training samples/s of each model at batch 64 in bf16 with
channels-last, which is what ``trainer=gpu`` runs) times the epochs a run takes, plus the
run's set-up (process start, first step under cuDNN autotuning, test and calibration). The
campaign's own records replace each part as they come: the epochs of recorded runs of the same
loss (early stopping), their measured time outside training, and once a run of the model
itself is recorded, its slowest wall time.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bone_age.bench.campaign.runs import Run
from bone_age.utils.errors import BoneAgeError, brief
from bone_age.utils.files import regular_file

# The paper's settings, as the configuration's defaults give them (conf/data, conf/trainer,
# conf/callbacks/early_stopping.yaml): 4,474 subjects, 5 folds, 10% of the training folds for
# validation, at most 100 epochs, early stopping after 30 without improvement.
SUBJECTS = 4474
FOLDS = 5
VAL_FRACTION = 0.1
MAX_EPOCHS = 100
PATIENCE = 30
TRAIN = SUBJECTS * (1 - 1 / FOLDS) * (1 - VAL_FRACTION)  # 3,221 studies an epoch
VAL = SUBJECTS * (1 - 1 / FOLDS) * VAL_FRACTION
# A validation sample costs about a third of a training one (forward only, no backward).
EVAL_COST = 1 / 3
# The GPU check's variants of a model, preferred first: trainer=gpu is bf16-mixed + channels-last.
VARIANTS = ("bf16+cl", "bf16")
# A run's time outside its epochs before any run is recorded: interpreter, imports and Hydra,
# loaders, test pass and calibration (not measured on a GPU yet: the GPU check's paper-scale stage
# was cut short), plus the model's measured first step.
START_GUESS_S = 30.0
MARGIN = 1.15  # every estimate x this: a run whose estimate was short is stopped and lost


class EstimateError(BoneAgeError, ValueError):
    """The GPU check's results file is not what the check writes (one line naming it)."""


@dataclass(frozen=True)
class GpuRates:
    """What the GPU check measured per model: training samples/s and the first step's time."""

    samples_per_s: dict[str, float]
    variant: dict[str, str]
    first_step_s: dict[str, float] = field(default_factory=dict)
    source: str = "GPU check"


_FIRST_STEP = re.compile(r"first step ([0-9]+(?:\.[0-9]+)?) s")
_RATE = re.compile(r"b (?P<model>[a-z0-9_]+) (?P<variant>[a-z0-9+]+): training samples/s")


def read_gpu_rates(path: Path) -> GpuRates | None:
    """The training rates of ``path`` (the GPU check's results.json); None when there is no such
    file or it holds no rate. EstimateError, one line naming the file, when it is damaged."""
    if not os.path.lexists(path):
        return None
    regular_file(path, "GPU check's results file", EstimateError)
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise EstimateError(f"{path}: not UTF-8 (byte {err.start})") from None
    except (ValueError, RecursionError) as err:
        raise EstimateError(f"{path}: not JSON ({brief(err)})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise EstimateError(f"{path}: not the GPU check's list of results")
    found: dict[str, tuple[int, float, float | None, str]] = {}
    machine = ""
    for entry in entries:
        m = _RATE.fullmatch(str(entry.get("name", "")))
        if m is None or m["variant"] not in VARIANTS or entry.get("dry_run"):
            continue
        value = entry.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value > 0):
            raise EstimateError(f"{path}: {entry['name']}: value {value!r} is not a rate > 0")
        rank = VARIANTS.index(m["variant"])
        if m["model"] in found and found[m["model"]][0] <= rank:
            continue
        first = _FIRST_STEP.search(str(entry.get("note", "")))
        found[m["model"]] = (rank, float(value), float(first[1]) if first else None,
                             m["variant"])
        box = entry.get("machine") if isinstance(entry.get("machine"), dict) else {}
        gpu = box.get("gpu") if isinstance(box.get("gpu"), dict) else {}
        machine = " ".join(x for x in (str(gpu.get("name") or ""),
                                       str(entry.get("date") or "")[:10]) if x)
    if not found:
        return None
    return GpuRates({k: v[1] for k, v in found.items()}, {k: v[3] for k, v in found.items()},
                    {k: v[2] for k, v in found.items() if v[2] is not None},
                    f"GPU check{' (' + machine + ')' if machine else ''}")


def epoch_seconds(samples_per_s: float) -> float:
    """One epoch at paper scale: the training studies, then validation (forward only)."""
    return (TRAIN + VAL * EVAL_COST) / samples_per_s


def _recorded(records: dict[str, dict[str, Any]], key: str, keep) -> list[float]:
    return [float(r[key]) for name, r in records.items()
            if (p := Run.parse(name)) is not None and keep(p)
            and isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]


def expected_epochs(model: str, loss: str,
                    records: dict[str, dict[str, Any]]) -> tuple[float, str]:
    """Epochs a run of ``model`` + ``loss`` is expected to take, and from what: the most of
    the recorded runs of the same cell, else of the same loss (early stopping depends on the
    loss more than on the trunk), else the configuration's max_epochs (a run that stops early
    ends sooner; one estimated short would be stopped and lost)."""
    for what, keep in ((f"{model} + {loss}", lambda p: p.model == model and p.loss == loss),
                       (f"{loss}", lambda p: p.loss == loss)):
        epochs = _recorded(records, "epochs", keep)
        if epochs:
            return max(epochs), f"most of {len(epochs)} recorded {what} run(s)"
    return float(MAX_EPOCHS), (f"max_epochs {MAX_EPOCHS}; early stopping (patience {PATIENCE}) "
                               "may end it sooner")


def setup_seconds(model: str, records: dict[str, dict[str, Any]],
                  rates: GpuRates) -> tuple[float, str]:
    """A run's time outside its training epochs: the most measured in recorded runs (wall time
    less training), else the GPU check's first step of the model + START_GUESS_S."""
    outside = [float(r["wall_s"]) - float(r["train_seconds"]) for r in records.values()
               if all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                      for k in ("wall_s", "train_seconds"))]
    if outside:
        return max(outside), f"most of {len(outside)} recorded run(s)"
    first = rates.first_step_s.get(model)
    if first is None:
        return START_GUESS_S, "a guess"
    return first + START_GUESS_S, f"first step {first:.0f} s + {START_GUESS_S:.0f} s (a guess)"


def from_gpu_check(model: str, loss: str, records: dict[str, dict[str, Any]],
                   rates: GpuRates | None) -> tuple[float, str] | None:
    """The estimate from the GPU check's rate for ``model`` (None without one)."""
    if rates is None or model not in rates.samples_per_s:
        return None
    rate = rates.samples_per_s[model]
    epochs, epochs_basis = expected_epochs(model, loss, records)
    setup, setup_basis = setup_seconds(model, records, rates)
    seconds = (epochs * epoch_seconds(rate) + setup) * MARGIN
    return seconds, (f"{rates.source}: {rate:.0f} samples/s ({rates.variant[model]}) x "
                     f"{epochs:.0f} epochs ({epochs_basis}) + {setup:.0f} s set-up "
                     f"({setup_basis}), x {MARGIN}")
