"""Hydra callback: a sweep says how many runs it holds, which one is running and the time left.

``on_run_start`` (a single run): a paper-size run on a CPU says so, with its estimated time,
before it starts. ``on_multirun_start`` (once, before the first run): the number of runs, and,
when they are paper-size runs on a CPU (hours to days each: the sweep the README suggests would
otherwise run for weeks without a word), the same estimate and a question before any work
(a phantom of several GB included): answered at a terminal, refused in one line without one,
``yes=true`` to go ahead anyway. ``on_job_start`` (each run, in the process that runs it, whatever
the launcher): ``run k of N`` with its overrides and, once runs have finished, the time left.
The grid is counted with Hydra's own override parser from the sweep's ``multirun.yaml`` (the
sweeper writes it before the first run), so every launcher and sweep syntax counts alike.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bone_age.utils.console import duration
from bone_age.utils.cores import usable_cores
from bone_age.utils.errors import fail

log = logging.getLogger("bone_age")

# Above this many pixels a view (128 x 128), a run is not CPU-size (the CPU presets use 128 x 64
# and 64 x 32; the paper 224 x 224).
CPU_SIZE_PIXELS = 128 * 128


def sweep_size(hydra_cfg: DictConfig) -> int:
    """Runs in the sweep: the product of the sweep overrides' lengths (config ``params`` and
    the command line's, the latter winning for the same key, as Hydra's sweeper combines them)."""
    overrides = {str(k): f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()}
    for text in hydra_cfg.overrides.task:
        overrides[str(text).split("=", 1)[0].lstrip("+~")] = str(text)
    parsed = OverridesParser.create().parse_overrides(list(overrides.values()))
    return math.prod(len(list(o.sweep_string_iterator())) for o in parsed
                     if o.is_sweep_override())


def _on_cpu(config: DictConfig) -> bool:
    accelerator = OmegaConf.select(config, "trainer.accelerator", default="auto")
    if accelerator == "cpu":
        return True
    if accelerator not in ("auto", None):
        return False
    import torch

    return not torch.cuda.is_available()


# Dual VGG16 + mv training at 224 x 224 in float32 on a CPU: 0.87 samples/s a core (measured,
# docs/performance.md). The estimate before a paper-size CPU run starts scales it by pixels and
# views; it gives the order of magnitude (the run measures its own after its first steps).
CPU_SAMPLES_PER_CORE_S = 0.87
_MEASURED_PIXELS = 224 * 224


def _dims(config: DictConfig) -> list[int]:
    size = OmegaConf.select(config, "data.image_size", default=None)
    return [int(v) for v in size] if OmegaConf.is_list(size) or isinstance(size, (list, tuple)) \
        else [int(size or 0)] * 2


def paper_size_on_cpu(config: DictConfig) -> bool:
    """Whether the run's views are above CPU size and it will train on a CPU."""
    return math.prod(_dims(config)) > CPU_SIZE_PIXELS and _on_cpu(config)


def _cohort_size(config: DictConfig) -> int | None:
    """Subjects in the cohort, without generating or caching anything (None if unknown)."""
    source = str(OmegaConf.select(config, "data.source._target_", default=""))
    if source.endswith("PhantomSource"):
        subjects = OmegaConf.select(config, "data.subjects", default=None)
        return subjects if isinstance(subjects, int) else None
    manifest = OmegaConf.select(config, "data.manifest", default=None)
    if not isinstance(manifest, str) or not Path(manifest).expanduser().is_file():
        return None
    from bone_age.data.manifest import read_cohort

    try:
        return len(read_cohort(Path(manifest).expanduser()))
    except Exception:  # noqa: BLE001 - an unreadable manifest is the run's to report
        return None


def cpu_estimate(config: DictConfig, cores: int | None = None) -> str:
    """``about 9.1 days (3,221 training studies x 100 epochs at ...)``: the run's training time
    on this machine's cores, from the measured CPU speed; "" when the cohort size is unknown."""
    subjects = _cohort_size(config)
    if not subjects:
        return ""
    folds = OmegaConf.select(config, "data.num_folds", default=5) or 5
    val = OmegaConf.select(config, "data.val_fraction", default=0.1) or 0.1
    epochs = OmegaConf.select(config, "trainer.max_epochs", default=100) or 100
    views = OmegaConf.select(config, "model.views", default=2) or 2
    train = subjects * (1 - 1 / folds) * (1 - val)
    cores = cores or usable_cores()
    rate = CPU_SAMPLES_PER_CORE_S * cores * _MEASURED_PIXELS / math.prod(_dims(config)) \
        * 2 / views
    return (f"about {duration(train * epochs / rate)} ({round(train):,} training studies x "
            f"{epochs} epochs at the measured CPU speed on {cores} core(s); early stopping may "
            "end it sooner)")


def _confirmed(config: DictConfig, what: str) -> None:
    """Goes on only when the user says so: ``yes=true``, or "y" at a terminal; without a
    terminal (CI, a script) refuses in one line naming ``yes=true``. Exits 2 otherwise."""
    if OmegaConf.select(config, "yes", default=False) is True:
        return
    if sys.stdin is None or not sys.stdin.isatty():
        sys.exit(fail("run", f"{what}: not started without a terminal to confirm it; add "
                             "yes=true to run it anyway, or experiment=table1_cpu for Table 1 "
                             "at CPU size, trainer=gpu for a GPU"))
    print(f"bone-age run: {what}; start it? [y/N] ", end="", file=sys.stderr, flush=True)
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        sys.exit(fail("run", f"{what}: not started (yes=true starts it without asking)"))


class SweepProgress(Callback):
    """Announces a sweep's size and each run's place in it (``conf/hydra/default.yaml``), and
    a paper-size run on a CPU before it starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if paper_size_on_cpu(config):
            estimate = cpu_estimate(config)
            log.warning("run: a paper-size run (%s pixels a view) on a CPU: %s; the run "
                        "estimates its own time after its first steps. experiment=cpu_base is "
                        "a CPU-size run (resnet10t at 128x64: add it to this command), "
                        "trainer=gpu uses a GPU", "x".join(str(v) for v in _dims(config)),
                        estimate or "hours to days")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        n = sweep_size(config.hydra)
        log.info("sweep: %d runs into %s", n, config.hydra.sweep.dir)
        if paper_size_on_cpu(config):
            estimate = cpu_estimate(config)
            log.warning("sweep: %d runs at %s pixels a view on a CPU: a run of that size takes "
                        "%s here (each run estimates its own time after its first steps); "
                        "experiment=table1_cpu is Table 1 at CPU size, trainer=gpu uses a GPU",
                        n, "x".join(str(v) for v in _dims(config)),
                        f"{estimate} each" if estimate else "hours to days")
            _confirmed(config, f"a sweep of {n} paper-size runs on a CPU")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra_cfg = config.hydra
        sweep_dir = Path(hydra_cfg.sweep.dir)
        plan = sweep_dir / "multirun.yaml"
        if hydra_cfg.mode != RunMode.MULTIRUN or not plan.is_file():
            return
        try:
            n = sweep_size(OmegaConf.load(plan).hydra)
        except Exception:  # an unreadable plan costs the line, never the run
            return
        k = int(hydra_cfg.job.num) + 1
        what = " ".join(o for o in hydra_cfg.overrides.task if not o.startswith("hydra."))
        done = sum(1 for _ in sweep_dir.glob("*/metrics.json"))
        left = ""
        if done:
            per_run = (time.time() - plan.stat().st_mtime) / done
            left = f"; {done} finished, ~{duration(per_run * max(0, n - done))} left"
        log.info("run %d of %d (%s)%s", k, n, what, left)
