"""One run: compose the objects from config, fit on the training folds, test the held-out fold."""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from threadpoolctl import threadpool_limits

from bone_age.data.datamodule import BoneAgeDataModule
from bone_age.evaluation.fold_outputs import FoldEvaluation
from bone_age.evaluation.tracking import log_run_results, wandb_loggers
from bone_age.models import count_parameters
from bone_age.training.callbacks.divergence import check_precision, check_predictions
from bone_age.training.cluster import hpc_checkpoints, lightning_handles_requeue, slurm_plugins
from bone_age.training.module import BoneAgeModule
from bone_age.training.precision import (
    bf16_disagreement,
    on_cpu,
    supported_precision,
)
from bone_age.training.results import FittedRun, ResultsCallback, RunResults
from bone_age.training.resume import (
    ResumeError,
    check_tested_checkpoint,
    checkpoint_to_resume,
    finished_run,
    resume_hint,
    tested_checkpoint,
)
from bone_age.training.settings_check import check_output_folder, check_settings
from bone_age.utils.cores import launched_as_extra_rank, thread_count
from bone_age.utils.errors import brief, user_error_message
from bone_age.utils.outputs import folder_lock, remove_stale_temps

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


def _use_threads(setting: object, trainer_cfg: DictConfig) -> None:
    """torch's and the BLAS/OpenMP pools' threads: the cores this process may use (``threads``)."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", 0) or 0)
    if not processes and trainer_cfg.get("accelerator") == "cpu":
        devices = trainer_cfg.get("devices")
        processes = devices if isinstance(devices, int) and devices > 0 else 1
    threads = thread_count(setting, max(1, processes))
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    if threads < (os.cpu_count() or 1):
        log.info("%d thread(s): the cores this process may use, of the machine's %d",
                 threads, os.cpu_count())


class _RunClock(pl.Callback):
    """Notes that Lightning has restored the checkpoint and begun (sanity check or training),
    and times the run's phases from its creation (the start of ``train()``)."""

    def __init__(self) -> None:
        self.started = False
        self.marks: dict[str, float] = {"train": time.perf_counter()}

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch, batch_idx: int) -> None:
        self.marks.setdefault("first_step", time.perf_counter())

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["evaluation"] = time.perf_counter()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["evaluated"] = time.perf_counter()

    def timing(self) -> dict[str, float]:
        """``setup_seconds`` (train() to the first training step: cohort, cache, model, Lightning
        set-up, sanity check) and ``evaluation_seconds`` (the evaluation pass)."""
        m = self.marks
        spans = {"setup_seconds": ("train", "first_step"),
                 "evaluation_seconds": ("evaluation", "evaluated")}
        return {key: round(m[b] - m[a], 2) for key, (a, b) in spans.items()
                if a in m and b in m}


def train(cfg: DictConfig) -> RunResults:
    """Fit and test one model on one fold; returns the run's results (``metrics.json``).

    With ``resume=true`` a run whose folder already holds ``metrics.json`` is skipped, and one
    that holds ``checkpoints/last.ckpt`` continues from it (re-launch a sweep with the same
    ``hydra.sweep.dir`` to finish it). The run folder is locked for the run's life: a second
    run into it is refused in one line (OutputError) instead of mixing its files in.
    """
    check_settings(cfg)  # also before Hydra's folder (SettingsCheck); again for a sweep's jobs
    output_dir = Path(cfg.paths.output_dir)
    check_output_folder("paths.output_dir", output_dir)
    check_output_folder("data.cache_dir", cfg.data.cache_dir)
    with _run_folder_lock(output_dir):
        for folder in (output_dir, output_dir / "checkpoints"):
            remove_stale_temps(folder)  # half-written files of a killed run of this folder
        return _train(cfg, output_dir)


def _check_cpu_bf16(cfg: DictConfig, datamodule: BoneAgeDataModule, net: torch.nn.Module,
                    loss) -> None:
    """bf16-mixed on the CPU only where the run's own network computes what float32 does;
    else the run is float32, said in one warning line and recorded as what ran."""
    trainer_cfg = cfg.trainer
    if not (str(trainer_cfg.precision).startswith("bf16") and on_cpu(trainer_cfg)):
        return
    # A training batch as the data module builds it: (N, views, 3, H, W).
    shape = (datamodule.batch_size, len(datamodule.view_names), 3,
             *datamodule.cache.preprocess.image_size)
    why = bf16_disagreement(net, lambda out: loss.predict(out)[0], shape,
                            use_sex=bool(getattr(net, "use_sex", False)),
                            channels_last=bool((cfg.get("speed") or {}).get("channels_last")))
    if why:
        log.warning("trainer.precision %s -> 32-true: %s (the start-up check of this run's "
                    "network for CPU bf16; docs/performance.md)", trainer_cfg.precision, why)
        with open_dict(cfg):
            cfg.trainer.precision = "32-true"


def _run_folder_lock(output_dir: Path):
    """The run folder's lock, taken by the launching process only: Lightning's DDP ranks > 0,
    another node's processes and a SLURM job's other tasks re-run this job in the same folder,
    as part of it (the variables Lightning and the launchers set to say so)."""
    return nullcontext() if launched_as_extra_rank() else folder_lock(output_dir)


def _train(cfg: DictConfig, output_dir: Path) -> RunResults:
    # What runs is recorded (settings, loggers, report), not what was asked: bf16 falls back on
    # hardware without it.
    with open_dict(cfg):
        cfg.trainer.precision = supported_precision(cfg.trainer)
    finished = finished_run(cfg, output_dir)  # checked: a finished run's figures, settings
    if finished is not None:
        log.info("%s already finished; skipped (resume=true)", output_dir)
        return finished
    _use_threads(cfg.get("threads", "auto"), cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    _check_cpu_bf16(cfg, datamodule, net, loss)
    # Built as a partial: Hydra would turn the (dataclass) loss passed as an argument into a config.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss)
    _apply_speed_switches(net, cfg.get("speed") or {})
    callbacks = _instantiate_all(cfg.get("callbacks"))
    clock = _RunClock()
    loggers = _instantiate_all(cfg.get("logger"))
    requeue_signal = cfg.get("slurm", {}).get("requeue_signal", "USR2")
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), *slurm_plugins(requeue_signal)]
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, clock],
                                      logger=loggers or False,
                                      **({"plugins": plugins} if plugins else {}))
    _pin_job_for_ddp_children(str(output_dir))
    resume_from = checkpoint_to_resume(cfg, output_dir, module)
    with _distributed_job(), lightning_handles_requeue(requeue_signal):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from,
                        weights_only=True)
        except Exception as err:
            # Lightning restores the loops, optimizer and callbacks before training begins: a
            # failure in between is the checkpoint's, whatever part of it was damaged.
            if resume_from is None or clock.started or user_error_message(err) is not None:
                raise
            raise ResumeError(f"{resume_from}: cannot resume from it ({brief(err)}); "
                              f"{resume_hint(resume_from)}") from err
        ckpt = cfg.get("test_ckpt", "best")
        if ckpt == "best" and not getattr(trainer.checkpoint_callback, "best_model_path", ""):
            ckpt = None  # no checkpoint callback: test the weights as they are
        if resume_from is not None:  # a file an earlier process wrote: checked, one line
            check_tested_checkpoint(tested_checkpoint(trainer, ckpt), module)
        # The one evaluation pass: inner validation and test, on the run's device and precision.
        trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False,
                     weights_only=True)
        tested_epoch = module.best_epoch if ckpt == "best" else trainer.current_epoch
        check_predictions(module.evaluation, tested_epoch)
        check_precision(module.precision_check, str(trainer.precision), tested_epoch)
    results = RunResults(output_dir)
    if trainer.is_global_zero:
        for stale in hpc_checkpoints(output_dir):  # superseded by the finished run's checkpoints
            stale.unlink()
        run = fitted_run(trainer, module, datamodule, clock.timing())
        tail = time.perf_counter()
        # Sections in the configured order of the callbacks; metrics.json is written once.
        for section in (c for c in callbacks if isinstance(c, ResultsCallback)):
            section.add_results(results, run)
        if results.metrics:
            results.add({"results_seconds": round(time.perf_counter() - tail, 2)})
            if module.precision_check:  # reduced precision: what float32 said of it
                results.add({"float32_check": module.precision_check})
            results.write()
            for logger in wandb_loggers(trainer.loggers):
                columns, rows = results.tables.get("predictions", ([], []))
                log_run_results(logger, results.metrics, columns, rows, results.figures)
    if wandb_loggers(trainer.loggers):  # one W&B run per job: a sweep's jobs share the process
        import wandb

        wandb.finish()
    return results


def fitted_run(trainer: pl.Trainer, module: BoneAgeModule, datamodule: BoneAgeDataModule,
               timing: dict[str, float]) -> FittedRun:
    """What the results callbacks are given once the evaluation pass has run."""
    tested = getattr(trainer, "ckpt_path", None)
    return FittedRun(
        evaluation=FoldEvaluation(module.loss, module.evaluation["val"],
                                  module.evaluation["test"]),
        fold=datamodule.fold, n_train=len(datamodule.splits["train"]),
        train_mean_age=datamodule.train_mean_age(), split_info=datamodule.split_info(),
        problems=list(datamodule.problems), manifest=datamodule.manifest_path(),
        num_params=count_parameters(module.net), best_epoch=int(module.best_epoch) + 1,
        epochs=int(trainer.current_epoch), tested_checkpoint=Path(tested) if tested else None,
        timing=timing, folds=dict(datamodule.fold_of))


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
