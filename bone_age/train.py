"""One run: compose the objects from config, fit on the training folds, test the held-out fold."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict

from bone_age.cluster import hpc_checkpoints, lightning_handles_requeue, slurm_plugins
from bone_age.errors import BoneAgeError, brief, user_error_message
from bone_age.inference import CheckpointError, read_checkpoint, weights_mismatch

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list:
    """Objects of a config group whose entries may be null (switched off)."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _pin_job_for_ddp_children(output_dir: str) -> None:
    """Make Lightning's DDP child processes re-run exactly this job, in this job's folder.

    Lightning starts ranks > 0 by re-running ``sys.argv`` with ``hydra.run.dir`` set to the
    Hydra run dir. Inside a multirun, that command line would start the whole sweep again in
    another folder; so ``sys.argv`` becomes this job's own overrides and the run dir this job's
    output folder.
    """
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    OmegaConf.set_readonly(hydra_cfg, False)
    with open_dict(hydra_cfg):
        hydra_cfg.run.dir = output_dir
    OmegaConf.set_readonly(hydra_cfg, True)
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    sys.argv = [sys.argv[0], *overrides]


def _apply_speed_switches(net: torch.nn.Module, speed: DictConfig | dict) -> None:
    """channels-last weights and in-place torch.compile (state-dict keys stay the same)."""
    if speed.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    if speed.get("compile"):
        net.compile()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere it is emulated
    and bf16-mixed is slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def supported_precision(trainer_cfg: DictConfig | dict) -> str:
    """``trainer.precision``, adapted to the hardware so that a preset asking for bf16 is fast
    everywhere: fp16 on a CUDA GPU without bf16 (before Ampere), float32 on a CPU without
    native bf16."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    if not precision.startswith("bf16"):
        return precision
    accelerator = trainer_cfg.get("accelerator")
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto"
                                                and torch.cuda.is_available())
    if on_gpu and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        fallback = precision.replace("bf16", "16")
        log.warning("this GPU has no bf16: trainer.precision %s -> %s", precision, fallback)
        return fallback
    if not on_gpu and not cpu_has_bf16():
        log.warning("this CPU has no native bf16: trainer.precision %s -> 32-true", precision)
        return "32-true"
    return precision


class ResumeError(BoneAgeError):
    """A checkpoint to resume from that cannot be used (the message says what to do)."""


def _resume_hint(path: Path) -> str:
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


def _checkpoint_to_resume(
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
        raise ResumeError(f"{err}; cannot resume from it: {_resume_hint(newest)}") from None
    if problem:
        raise ResumeError(f"{newest}: cannot resume from it: {problem}; {_resume_hint(newest)}")
    log.info("resuming from %s", newest)
    return newest


class _TrainingStarted(pl.Callback):
    """Notes that Lightning has restored the checkpoint and begun (sanity check or training)."""

    started = False

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True


def train(cfg: DictConfig) -> dict:
    """Fit and test one model on one fold; returns the run's test metrics.

    With ``resume=true`` a run whose folder already holds ``metrics.json`` is skipped, and one
    that holds ``checkpoints/last.ckpt`` continues from it (re-launch a sweep with the same
    ``hydra.sweep.dir`` to finish it).
    """
    output_dir = Path(cfg.paths.output_dir)
    done = output_dir / "metrics.json"
    if cfg.get("resume") and done.exists():
        try:
            metrics = json.loads(done.read_text(encoding="utf-8"))
            why = None if isinstance(metrics, dict) else f"holds a {type(metrics).__name__}"
        except (OSError, ValueError) as err:
            why = brief(err)
        if why:
            raise ResumeError(f"{done}: not a readable metrics file ({why}); delete it to run "
                              "again, or set resume=false")
        log.info("%s already finished; skipped (resume=true)", output_dir)
        return metrics
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    # Built as a partial: Hydra would turn the (dataclass) loss passed as an argument into a config.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss)
    _apply_speed_switches(net, cfg.get("speed") or {})
    callbacks = _instantiate_all(cfg.get("callbacks"))
    started = _TrainingStarted()
    loggers = _instantiate_all(cfg.get("logger"))
    requeue_signal = cfg.get("slurm", {}).get("requeue_signal", "USR2")
    plugins = slurm_plugins(requeue_signal)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, started],
                                      logger=loggers or False,
                                      precision=supported_precision(cfg.trainer),
                                      **({"plugins": plugins} if plugins else {}))
    _pin_job_for_ddp_children(str(output_dir))
    resume_from = _checkpoint_to_resume(cfg, output_dir, module)
    with _distributed_job(), lightning_handles_requeue(requeue_signal):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
        except Exception as err:
            # Lightning restores the loops, optimizer and callbacks before training begins: a
            # failure in between is the checkpoint's, whatever part of it was damaged.
            if resume_from is None or started.started or user_error_message(err) is not None:
                raise
            raise ResumeError(f"{resume_from}: cannot resume from it ({brief(err)}); "
                              f"{_resume_hint(resume_from)}") from err
        ckpt = cfg.get("test_ckpt", "best")
        if ckpt == "best" and not getattr(trainer.checkpoint_callback, "best_model_path", ""):
            ckpt = None  # no checkpoint callback: test the weights as they are
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
    if trainer.is_global_zero:
        for stale in hpc_checkpoints(output_dir):  # superseded by the finished run's checkpoints
            stale.unlink()
    results = next((c for c in callbacks if hasattr(c, "metrics")), None)
    return results.metrics if results is not None else {}


@contextmanager
def _distributed_job():
    """Leave no process group or launcher variables behind for the next job of a sweep.

    The DDP ranks > 0 of a job exit when it ends; a later job in the same Hydra process must
    start its own group instead of reusing the dead one.
    """
    environ = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
