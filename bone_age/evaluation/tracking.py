"""Weights & Biases: the run logger (grouped by sweep) and what runs and reports send to it.

Works offline (``WANDB_MODE=offline``; sync later with ``wandb sync DIR/wandb/offline-run-*``)
and without an account. Only pseudonymous values are sent: subject_id, sex, ages, predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
    return WandbLogger(project=project, save_dir=save_dir, name=name,
                       group=sweep_group() or group, tags=list(tags), **kwargs)


def tensorboard_logger(save_dir: str, **kwargs: Any) -> Logger:
    """Lightning's TensorBoardLogger, once the optional ``tensorboard`` extra is there."""
    from pytorch_lightning.loggers import TensorBoardLogger

    require("tensorboard", "logger=tensorboard")
    return TensorBoardLogger(save_dir=save_dir, **kwargs)


def wandb_loggers(loggers: Sequence[Logger]) -> list[WandbLogger]:
    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


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
                    job_type="report", dir=str(sweep_dir), **init_kwargs) as run:
        columns = list(rows[0]) if rows else []
        run.log({"table1": wandb.Table(columns=columns,
                                       data=[[r[c] for c in columns] for r in rows])})
        run.log({f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()})
        return run.dir
