"""Resuming a run: which checkpoint to continue from, checked before Lightning touches it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from bone_age.inference.checkpoint import CheckpointError, read_checkpoint, weights_mismatch
from bone_age.training.cluster import hpc_checkpoints
from bone_age.utils.errors import BoneAgeError, brief

log = logging.getLogger(__name__)


class ResumeError(BoneAgeError):
    """A checkpoint to resume from that cannot be used (the message says what to do)."""


def resume_hint(path: Path) -> str:
    return "delete it to start the run over" + (", or set resume=false"
                                                 if path.name == "last.ckpt" else "")


def _resume_problem(ckpt: dict, module: pl.LightningModule) -> str | None:
    """What in a checkpoint would stop Lightning from resuming ``module``'s training."""
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
    return None


def checkpoint_to_resume(
    cfg: DictConfig, output_dir: Path, module: pl.LightningModule
) -> Path | None:
    """The newest of: a checkpoint saved at a SLURM requeue signal (always used under SLURM, as
    Lightning does) and, with ``resume=true``, the last end-of-epoch checkpoint.

    It is checked here (weights-only load) so that a damaged or foreign file ends the run with
    one line saying what to do, never silently starting over.
    """
    candidates = hpc_checkpoints(output_dir) if SLURMEnvironment.detect() else []
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume") and (last.exists() or last.is_symlink()):
        candidates.append(last)
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.lstat().st_mtime_ns)
    try:
        problem = _resume_problem(read_checkpoint(newest), module)
    except CheckpointError as err:
        raise ResumeError(f"{err}; cannot resume from it: {resume_hint(newest)}") from None
    if problem:
        raise ResumeError(f"{newest}: cannot resume from it: {problem}; {resume_hint(newest)}")
    log.info("resuming from %s", newest)
    return newest
