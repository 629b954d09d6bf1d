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


def supported_precision(trainer_cfg: DictConfig | dict) -> str:
    """``trainer.precision``, with bf16 replaced by fp16 on a CUDA GPU that has no bf16 (before
    Ampere), so that ``trainer=gpu`` takes the fast path on any GPU."""
    precision = str(trainer_cfg.get("precision", "32-true"))
    on_gpu = trainer_cfg.get("accelerator") in ("gpu", "cuda", "auto")
    if (precision.startswith("bf16") and on_gpu and torch.cuda.is_available()
            and not torch.cuda.is_bf16_supported()):
        fallback = precision.replace("bf16", "16")
        log.warning("this GPU has no bf16: trainer.precision %s -> %s", precision, fallback)
        return fallback
    return precision


def _checkpoint_to_resume(cfg: DictConfig, output_dir: Path) -> str | None:
    """The newest of: a checkpoint saved at a SLURM requeue signal (always used under SLURM, as
    Lightning does) and, with ``resume=true``, the last end-of-epoch checkpoint."""
    candidates = hpc_checkpoints(output_dir) if SLURMEnvironment.detect() else []
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.get("resume") and last.exists():
        candidates.append(last)
    if not candidates:
        return None
    newest = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    log.info("resuming from %s", newest)
    return str(newest)


def train(cfg: DictConfig) -> dict:
    """Fit and test one model on one fold; returns the run's test metrics.

    With ``resume=true`` a run whose folder already holds ``metrics.json`` is skipped, and one
    that holds ``checkpoints/last.ckpt`` continues from it (re-launch a sweep with the same
    ``hydra.sweep.dir`` to finish it).
    """
    output_dir = Path(cfg.paths.output_dir)
    if cfg.get("resume") and (output_dir / "metrics.json").exists():
        log.info("%s already finished; skipped (resume=true)", output_dir)
        return json.loads((output_dir / "metrics.json").read_text())
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    # Built as a partial: Hydra would turn the (dataclass) loss passed as an argument into a config.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss)
    _apply_speed_switches(net, cfg.get("speed") or {})
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    requeue_signal = cfg.get("slurm", {}).get("requeue_signal", "USR2")
    plugins = slurm_plugins(requeue_signal)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      precision=supported_precision(cfg.trainer),
                                      **({"plugins": plugins} if plugins else {}))
    _pin_job_for_ddp_children(str(output_dir))
    with _distributed_job(), lightning_handles_requeue(requeue_signal):
        trainer.fit(module, datamodule=datamodule,
                    ckpt_path=_checkpoint_to_resume(cfg, output_dir))
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
