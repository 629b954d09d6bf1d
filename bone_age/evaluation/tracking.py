"""Weights & Biases: the run logger (grouped by sweep) and what runs and reports send to it.

Works offline (``WANDB_MODE=offline``; sync later with ``wandb sync DIR/wandb/offline-run-*``)
and without an account. Only pseudonymous values are sent: subject_id, sex, ages, predictions,
the run's settings without local paths, its metrics and figures. W&B's own capture of the
machine (program, command line, executable, working folder, git commit, code, installed
packages, console output, system metrics) is switched off with its own ``wandb.Settings``
(``private_settings``): a path or a log line naming a hospital or a patient never travels.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.logger import _convert_params
from pytorch_lightning.loggers import Logger, WandbLogger

from bone_age.utils.extras import require


def sweep_group() -> str | None:
    """Name of the Hydra sweep folder in a multirun (None in a single run or outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return None
    if hydra_cfg.mode == RunMode.MULTIRUN and hydra_cfg.sweep.dir:
        return Path(str(hydra_cfg.sweep.dir)).name
    return None


# Keys whose values are local files or folders, whatever they look like (a relative
# ``cohort/manifest.csv`` names a folder too); any other absolute or existing path is caught by
# ``_is_local_path``.
PATH_KEYS = frozenset({"manifest", "cache_dir", "folds_file", "weights", "path", "root",
                       "save_dir", "default_root_dir", "dirpath"})


def private_settings() -> Any:
    """W&B settings that send nothing about the machine: no code, git state, program or
    command line, executable, working folder, host, installed packages, console output or
    system metrics (W&B's own switches; ``docs/dicom-and-privacy.md`` lists what is sent)."""
    wandb = require("wandb", "logger=wandb")
    return wandb.Settings(save_code=False, disable_code=True, disable_git=True,
                          x_disable_meta=True, x_disable_machine_info=True,
                          x_save_requirements=False, x_disable_stats=True, console="off",
                          program="bone_age")


def _is_local_path(key: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if key in PATH_KEYS or os.path.isabs(value) or value.startswith("~"):
        return True
    return os.sep in value and os.path.exists(value)  # "val/loss" is a metric, not a path


def without_local_paths(config: Any) -> Any:
    """``config`` with every value that is a local path left out (nested mappings and lists)."""
    if isinstance(config, Mapping):
        return {k: without_local_paths(v) for k, v in config.items()
                if not _is_local_path(str(k), v)}
    if isinstance(config, (list, tuple)):
        return [without_local_paths(v) for v in config if not _is_local_path("", v)]
    return config


class PrivateWandbLogger(WandbLogger):
    """Lightning's WandbLogger that sends its run's settings without local paths."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lightning always passes ``anonymous`` (None unless asked for); W&B warns about the
        # deprecated setting whenever it is passed at all.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    def log_hyperparams(self, params: Any) -> None:
        super().log_hyperparams(without_local_paths(_convert_params(params)))


def wandb_logger(
    project: str, save_dir: str, name: str, group: str | None = None,
    tags: Sequence[str] = (), **kwargs: Any,
) -> WandbLogger:
    """Lightning's WandbLogger, its runs grouped by the sweep they belong to.

    A multirun's jobs share the sweep folder's name as their group, so the project page shows
    one group per Table 1 sweep with one run per model, loss and fold; ``group`` applies to
    single runs.
    """
    require("wandb", "logger=wandb")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    kwargs.setdefault("settings", private_settings())
    return PrivateWandbLogger(project=project, save_dir=save_dir, name=name,
                              group=sweep_group() or group, tags=list(tags), **kwargs)


def tensorboard_logger(save_dir: str, **kwargs: Any) -> Logger:
    """Lightning's TensorBoardLogger, once the optional ``tensorboard`` extra is there."""
    from pytorch_lightning.loggers import TensorBoardLogger

    require("tensorboard", "logger=tensorboard")
    return TensorBoardLogger(save_dir=save_dir, **kwargs)


def wandb_loggers(loggers: Sequence[Logger]) -> list[WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


@contextmanager
def wandb_run_of_job(loggers: Sequence[Logger]) -> Iterator[None]:
    """Ends this job's W&B run when the job ends, finished or failed (marked so): a sweep's
    jobs share the process, and each must start a W&B run of its own."""
    failed = True
    try:
        yield
        failed = False
    finally:
        if wandb_loggers(loggers):
            import wandb

            wandb.finish(exit_code=1 if failed else None)


def log_results(loggers: Sequence[Logger], metrics: dict[str, Any],
                tables: Mapping[str, tuple[list[str], list[list[Any]]]],
                figures: dict[str, Path]) -> None:
    """A finished run's results to each W&B logger of ``loggers`` (the others keep theirs)."""
    for logger in wandb_loggers(loggers):
        columns, rows = tables.get("predictions", ([], []))
        log_run_results(logger, metrics, columns, rows, figures)


def log_run_results(
    logger: WandbLogger, metrics: dict[str, Any], columns: list[str], rows: list[list[Any]],
    figures: dict[str, Path],
) -> None:
    """A finished run's summary metrics, predictions table and figures."""
    logger.experiment.summary.update(
        {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    )
    # Numbers as numbers, so that W&B can plot the table's columns.
    logger.log_table("predictions", columns=columns, data=[[_number(v) for v in r] for r in rows])
    for key, path in figures.items():
        logger.log_image(f"figures/{key}", [str(path)])


def _number(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if value == "":
        return None
    try:
        return float(value)
    except ValueError:
        return value


def log_table1(
    rows: list[dict[str, Any]], figures: dict[str, Path], sweep_dir: Path, project: str,
    **init_kwargs: Any,
) -> str:
    """A ``report`` run in the sweep's group with Table 1 as a W&B table and its figures."""
    wandb = require("wandb", "the report's W&B upload")

    with wandb.init(project=project, group=sweep_dir.name, name=f"table1-{sweep_dir.name}",
                    job_type="report", dir=str(sweep_dir),
                    **{"settings": private_settings(), **init_kwargs}) as run:
        columns = list(rows[0]) if rows else []
        run.log({"table1": wandb.Table(columns=columns,
                                       data=[[r[c] for c in columns] for r in rows])})
        run.log({f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()})
        return run.dir
