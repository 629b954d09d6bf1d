"""Hydra callback: a sweep says how many runs it holds, which one is running and the time left.

``on_multirun_start`` (once, before the first run): the number of runs, and a warning when they
are paper-size runs on a CPU (hours to days each: the sweep the README suggests would otherwise
run for weeks without a word). ``on_job_start`` (each run, in the process that runs it, whatever
the launcher): ``run k of N`` with its overrides and, once runs have finished, the time left.
The grid is counted with Hydra's own override parser from the sweep's ``multirun.yaml`` (the
sweeper writes it before the first run), so every launcher and sweep syntax counts alike.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bone_age.utils.console import duration

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


class SweepProgress(Callback):
    """Announces a sweep's size and each run's place in it (``conf/hydra/default.yaml``)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        n = sweep_size(config.hydra)
        log.info("sweep: %d runs into %s", n, config.hydra.sweep.dir)
        size = OmegaConf.select(config, "data.image_size", default=None)
        dims = list(size) if OmegaConf.is_list(size) or isinstance(size, (list, tuple)) \
            else [size or 0] * 2
        if math.prod(dims) > CPU_SIZE_PIXELS and _on_cpu(config):
            log.warning("sweep: %d runs at %s pixels a view on a CPU: a run of that size takes "
                        "hours to days here (each run estimates its own time after its first "
                        "steps); experiment=table1_cpu is Table 1 at CPU size, trainer=gpu "
                        "uses a GPU", n, "x".join(str(v) for v in dims))

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
