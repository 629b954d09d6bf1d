"""The settings check of a run and of a sweep: ``check_settings`` (the table's rules, then the
libraries' construction check), and the Hydra callback that runs it before Hydra creates the run
folder, or, for a sweep, on every job's composed config before the first job.

``SettingsCheck`` (conf/hydra) checks before the run folder exists, so a bad value leaves
nothing behind; ``train()`` checks again for each job of a sweep and for runs started from
Python.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from bone_age.training.construction_check import check_construction
from bone_age.training.key_checks import SettingsError, check_keys, check_output_folder
from bone_age.utils.cores import launched_as_extra_rank
from bone_age.utils.errors import fail
from bone_age.utils.outputs import OutputError, check_not_in_use

__all__ = ["SettingsCheck", "SettingsError", "check_output_folder", "check_settings",
           "check_sweep", "sweep_jobs"]


def check_settings(cfg: DictConfig) -> None:
    """Every key of the table the config holds, the rules between keys and the hardware, then
    every other setting by the libraries (``check_construction``).

    Args:
        cfg: a run's composed configuration (with Hydra's node where there is one).

    Raises:
        SettingsError: the first setting outside what it allows.
    """
    check_keys(cfg)
    check_construction(cfg)


class SettingsCheck(Callback):
    """Hydra callback: the settings and the output folder checked before Hydra creates the
    folder, so that a mistake ends in one line and leaves no folder behind."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A folder another run holds is refused before Hydra writes its .hydra/ into it.
        self._check(lambda: (check_settings(config),
                             check_output_folder("hydra.run.dir", config.hydra.run.dir),
                             None if launched_as_extra_rank() else
                             check_not_in_use(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Every job's config, composed as the sweeper will compose it, is checked before the
        # first job: a value no job can use stops the sweep now, not after hours of runs.
        self._check(lambda: (check_output_folder("hydra.sweep.dir", config.hydra.sweep.dir),
                             check_sweep(config)))

    @staticmethod
    def _check(check: Callable[[], Any]) -> None:
        try:
            check()
        except (SettingsError, OutputError) as err:  # Hydra would print several lines, exit 1
            sys.exit(fail("run", str(err)))


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job of the sweep, as Hydra's basic sweeper combines them: the
    config's ``hydra.sweeper.params`` then the command line's (the later wins for a key)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(
        [*params, *(str(o) for o in config.hydra.overrides.task)])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batches[0]] if batches else [[]]


def check_sweep(config: DictConfig) -> None:
    """``check_settings`` on every job's composed config, before the first job runs.

    Raises:
        SettingsError: the first job's setting outside what it allows, naming the key first,
            then the job (its place and overrides).
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not GlobalHydra.instance().is_initialized():
        return
    loader = GlobalHydra.instance().config_loader()
    jobs = sweep_jobs(config)
    if len(jobs) > 1:  # a second or so a job on a loaded machine: said, not silent
        logging.getLogger("bone_age").info("sweep: checking the settings of its %d runs",
                                           len(jobs))
    instance = HydraConfig.instance()
    saved = instance.cfg
    try:
        for num, overrides in enumerate(jobs):
            job = loader.load_sweep_config(config, list(overrides))
            with read_write(job), open_dict(job):  # as the launcher sets them
                job.hydra.job.num = num
                job.hydra.runtime.output_dir = os.path.abspath(
                    os.path.join(str(config.hydra.sweep.dir), str(num)))
            instance.set_config(job)
            try:
                check_settings(job)
            except SettingsError as err:
                shown = " ".join(o for o in overrides if not o.startswith("hydra."))
                raise SettingsError(f"{err} (sweep run {num + 1} of {len(jobs)}: {shown}); "
                                    "nothing was run") from None
    finally:
        instance.cfg = saved  # type: ignore[assignment]
