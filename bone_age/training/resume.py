"""Resuming a run: skipping a finished one, which checkpoint to continue from (checked before
Lightning touches it), a failure while Lightning restores it, and the checkpoint to test."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from bone_age.evaluation.run_settings import SETTINGS_KEY, settings_change, settings_now
from bone_age.inference.checkpoint import CheckpointError, read_checkpoint, weights_mismatch
from bone_age.training.cluster import hpc_checkpoints
from bone_age.training.run_results import MetricsFileError, RunResults
from bone_age.utils.errors import BoneAgeError, brief, user_error_message

log = logging.getLogger(__name__)


class ResumeError(BoneAgeError):
    """A checkpoint to resume from that cannot be used (the message says what to do)."""


def resume_hint(path: Path) -> str:
    return "delete it to start the run over" + (", or set resume=false"
                                                 if path.name == "last.ckpt" else "")


# The paths a ModelCheckpoint state holds: Lightning tests, overwrites and deletes the files they
# name, so a resumed run keeps only those inside its own checkpoint folder.
_PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def _in_folder(stored: Any, folder: Path, key: str) -> str:
    """``stored`` as the file of the same name in ``folder``, where that file exists.

    A run folder copied elsewhere keeps working (its files are there under the same names);
    a path to anything else is refused.

    Raises:
        ResumeError: not a path, or no such file in ``folder``.
    """
    if stored in ("", None):
        return ""
    if not isinstance(stored, str):
        raise ResumeError(f"checkpoint state {key} is a {type(stored).__name__}, not a path")
    candidate = folder / Path(stored).name
    if candidate.resolve().parent != folder.resolve() or not candidate.is_file():
        raise ResumeError(f"checkpoint state {key} names {stored}, which is not a checkpoint in "
                          f"this run's folder {folder}")
    return str(candidate)


def confine_checkpoint_state(state: dict, folder: Path) -> dict:
    """A ModelCheckpoint state whose paths all name files in ``folder`` (its ``dirpath``).

    Raises:
        ResumeError: a path names a file that is not in ``folder`` under its name.
    """
    if not isinstance(state, dict):
        raise ResumeError(f"checkpoint state is a {type(state).__name__}, not a mapping")
    confined = dict(state, dirpath=str(folder))
    for key in _PATH_KEYS:
        if key in state:
            confined[key] = _in_folder(state[key], folder, key)
    best_k = state.get("best_k_models", {})
    if not isinstance(best_k, dict):
        raise ResumeError(f"checkpoint state best_k_models is a {type(best_k).__name__}")
    confined["best_k_models"] = {_in_folder(path, folder, "best_k_models"): score
                                 for path, score in best_k.items()}
    return confined


def _callbacks_problem(callbacks: dict, folder: Path) -> str | None:
    """Why the checkpoint callbacks' states cannot be trusted in this run's ``folder``."""
    for name, state in callbacks.items():
        if str(name).startswith("ModelCheckpoint"):
            try:
                confine_checkpoint_state(state, folder)
            except ResumeError as err:
                return str(err)
    return None


def _resume_problem(ckpt: dict, module: pl.LightningModule, folder: Path) -> str | None:
    """What in a checkpoint would stop Lightning from resuming ``module``'s training in a run
    whose checkpoints are in ``folder``."""
    for key, kind in (("epoch", int), ("global_step", int), ("state_dict", dict),
                      ("optimizer_states", list), ("lr_schedulers", list), ("loops", dict),
                      ("callbacks", dict)):
        if key not in ckpt:
            return f"'{key}' is missing (not a full training checkpoint)"
        if not isinstance(ckpt[key], kind) or isinstance(ckpt[key], bool):
            return f"'{key}' is a {type(ckpt[key]).__name__}, expected a {kind.__name__}"
    best = ckpt.get("best_val", {})
    if not isinstance(best, dict) or not isinstance(best.get("value", 0.0), (int, float)) \
            or not isinstance(best.get("epoch", 0), int):
        return "'best_val' is not {value: number, epoch: int}"
    problem = weights_mismatch(module.state_dict(), ckpt["state_dict"],
                               "the network of this run's settings")
    if problem:
        return f"{problem} (a checkpoint of other settings?)"
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    if len(ckpt["optimizer_states"]) != 1:
        return f"'optimizer_states' holds {len(ckpt['optimizer_states'])} optimizers, expected 1"
    try:  # into a throwaway optimizer: checks groups, sizes and state shapes
        optimizer.load_state_dict(ckpt["optimizer_states"][0])
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        return f"optimizer state does not fit ({brief(err)})"
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                    return (f"optimizer state {name} has shape {list(value.shape)} for a "
                            f"parameter of shape {list(param.shape)}")
    return _callbacks_problem(ckpt["callbacks"], folder)


def checkpoint_to_resume(
    cfg: DictConfig, output_dir: Path, module: pl.LightningModule
) -> Path | None:
    """The newest of: a checkpoint saved at a SLURM requeue signal (always used under SLURM, as
    Lightning does) and, with ``resume=true``, the last end-of-epoch checkpoint.

    It is checked here (weights-only load) so that a damaged or foreign file ends the run with
    one line saying what to do, never silently starting over.
    """
    candidates = hpc_checkpoints(output_dir) if SLURMEnvironment.detect() else []
    folder = Path(OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
                  or output_dir / "checkpoints")
    last = folder / "last.ckpt"
    if cfg.get("resume") and (last.exists() or last.is_symlink()):
        candidates.append(last)
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.lstat().st_mtime_ns)
    if newest.resolve().parent not in (folder.resolve(), output_dir.resolve()):
        raise ResumeError(f"{newest}: leads to {newest.resolve()}, outside this run's folder; "
                          f"a run resumes only from its own checkpoints: "
                          f"{resume_hint(newest)}")
    try:
        ckpt = read_checkpoint(newest)
    except CheckpointError as err:
        raise ResumeError(f"{err}; cannot resume from it: {resume_hint(newest)}") from None
    problem = _resume_problem(ckpt, module, folder)
    if problem:
        raise ResumeError(f"{newest}: cannot resume from it: {problem}; {resume_hint(newest)}")
    changed = settings_change(ckpt.get(SETTINGS_KEY), settings_now(cfg), newest)
    if changed:
        raise ResumeError(changed)
    log.info("resuming from %s", newest)
    return newest


def finished_run(cfg: DictConfig, output_dir: Path) -> RunResults | None:
    """With ``resume=true``, the results of a run that already finished in ``output_dir`` (to be
    skipped), or None when it has no ``metrics.json``.

    Raises:
        ResumeError: a metrics.json that is not a finished run's (a FIFO, not JSON, figures
            missing or NaN: taken as finished, the run summary would fail), or one recorded
            with other settings.
    """
    metrics_file = RunResults(output_dir).metrics_file
    if not cfg.get("resume") or not os.path.lexists(metrics_file):
        return None
    try:
        finished = RunResults.read(output_dir)
    except MetricsFileError as err:
        raise ResumeError(f"{metrics_file}: not a finished run's metrics file ({err}); delete "
                          "it to run again, or set resume=false") from None
    except OSError as err:
        raise ResumeError(f"{metrics_file}: not a readable metrics file ({brief(err)}); delete "
                          "it to run again, or set resume=false") from None
    changed = settings_change(finished.metrics.get("settings"), settings_now(cfg), metrics_file)
    if changed:
        raise ResumeError(changed)
    log.info("%s already finished; skipped (resume=true)", output_dir)
    return finished


@contextmanager
def restore_failures(resume_from: Path | None, started: Callable[[], bool]) -> Iterator[None]:
    """A fit's failure before training began, as the checkpoint's it resumed from.

    Lightning restores the loops, optimizer and callbacks before training begins: a failure in
    between is the checkpoint's, whatever part of it was damaged. Said in one line with what to
    do (``ResumeError``); a failure after ``started()``, or a user error, passes unchanged.
    """
    try:
        yield
    except Exception as err:
        if resume_from is None or started() or user_error_message(err) is not None:
            raise
        raise ResumeError(f"{resume_from}: cannot resume from it ({brief(err)}); "
                          f"{resume_hint(resume_from)}") from err


def tested_checkpoint(trainer: pl.Trainer, ckpt: str | None) -> Path | None:
    """The file ``trainer.test(ckpt_path=ckpt)`` will load ("best" or "last"), None if none."""
    if ckpt == "best":
        path = getattr(trainer.checkpoint_callback, "best_model_path", "")
        return Path(path) if path else None
    if ckpt == "last":
        found = [Path(p) for cb in trainer.checkpoint_callbacks
                 if (p := getattr(cb, "last_model_path", ""))]
        found = [p for p in found if p.exists()]
        return max(found, key=lambda p: p.stat().st_mtime_ns) if found else None
    return None


def check_resumed_test(trainer: pl.Trainer, ckpt: str | None, module: pl.LightningModule,
                       resumed_from: Path | None) -> None:
    """A resumed run's checkpoint to test (``ckpt``: "best", "last" or None), checked: an
    earlier process wrote it.

    Raises:
        ResumeError: it cannot be tested (``check_tested_checkpoint``).
    """
    if resumed_from is not None:
        check_tested_checkpoint(tested_checkpoint(trainer, ckpt), module)


def check_tested_checkpoint(path: Path | None, module: pl.LightningModule) -> None:
    """Refuse, in one line, a checkpoint to test that a resumed run did not write itself and
    that cannot be tested: damaged, unsafe (loaded weights-only: no code in it runs) or of
    another network. Lightning would end in a traceback while loading it.

    Raises:
        ResumeError: naming the file and what to do.
    """
    if path is None:
        return
    hint = ("delete the run's checkpoints folder to start the run over, or set resume=false "
            "with another hydra.run.dir")
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        raise ResumeError(f"{err}; it is the checkpoint to test: {hint}") from None
    problem = weights_mismatch(module.state_dict(), ckpt.get("state_dict"),
                               "the network of this run's settings")
    if problem:
        raise ResumeError(f"{path}: cannot test it: {problem}; {hint}")
