"""One run, told as its steps: compose the objects from config, fit on the training folds, test
the held-out fold once, write the results.

The plumbing lives with its owners: the launcher's side (threads, the run folder's lock, DDP's
children, SLURM's requeue) in ``cluster.py``; skipping a finished run, the checkpoint to resume
from and a failure while restoring it in ``resume.py``; the W&B run in
``evaluation/tracking.py``; the results' sections in the writers of the ``results`` config group
(``writers/``), each a function of the ``FittedRun``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from bone_age.data.datamodule import BoneAgeDataModule
from bone_age.evaluation.fold_outputs import FoldEvaluation
from bone_age.evaluation.run_settings import settings_now
from bone_age.evaluation.tracking import log_results, wandb_run_of_job
from bone_age.models import count_parameters
from bone_age.training.callbacks.divergence import check_precision, check_predictions
from bone_age.training.callbacks.fit_record import FitRecord
from bone_age.training.cluster import (
    launched_job,
    remove_requeue_checkpoints,
    run_folder_lock,
    slurm_plugins,
    use_threads,
)
from bone_age.training.module import BoneAgeModule
from bone_age.training.precision import bf16_disagreement, on_cpu, supported_precision
from bone_age.training.resume import (
    check_resumed_test,
    checkpoint_to_resume,
    finished_run,
    restore_failures,
)
from bone_age.training.run_results import FittedRun, ResultsWriter, RunResults
from bone_age.training.settings_check import check_output_folder, check_settings
from bone_age.utils.outputs import remove_stale_temps

log = logging.getLogger(__name__)


@dataclass
class ComposedRun:
    """The objects of one run, composed from its config, and what the fit tells of them.

    Args:
        cfg: the run's configuration.
        output_dir: the run's folder.
        datamodule, module, trainer: what Lightning fits and tests.
        writers: the results writers, in the configured order.
        record: the fit's history and the run's phases (``FitRecord``).
        requeue_signal: the signal at which SLURM requeues the job.
        resumed_from: the checkpoint the fit continued from (None: started afresh).
    """

    cfg: DictConfig
    output_dir: Path
    datamodule: BoneAgeDataModule
    module: BoneAgeModule
    trainer: pl.Trainer
    writers: list[ResultsWriter]
    record: FitRecord
    requeue_signal: str
    resumed_from: Path | None = None


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
    with run_folder_lock(output_dir):
        for folder in (output_dir, output_dir / "checkpoints"):
            remove_stale_temps(folder)  # half-written files of a killed run of this folder
        # What runs is recorded (settings, loggers, report), not what was asked: bf16 falls back
        # on hardware without it.
        with open_dict(cfg):
            cfg.trainer.precision = supported_precision(cfg.trainer)
        finished = finished_run(cfg, output_dir)  # resume=true: checked, then skipped
        if finished is not None:
            return finished
        log.info("composing the run from its config")
        run = compose_run(cfg, output_dir)
        with wandb_run_of_job(run.trainer.loggers):
            with launched_job(output_dir, run.requeue_signal):
                log.info("fitting the model")
                fit_run(run)
                log.info("testing the model")
                evaluate_run(run)
            log.info("writing the results to %s", output_dir)
            return write_results(run)


def compose_run(cfg: DictConfig, output_dir: Path) -> ComposedRun:
    """The run's objects from its config: data, network, loss, module, callbacks, loggers,
    trainer and results writers (threads and seed first: what is built depends on them)."""
    use_threads(cfg.get("threads", "auto"), cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    _check_cpu_bf16(cfg, datamodule, net, loss)
    # Built as a partial: Hydra would turn the (dataclass) loss passed as an argument into a config.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss)
    _apply_speed_switches(net, cfg.get("speed") or {})
    record = FitRecord()  # first: the fit's time includes the other callbacks' start
    callbacks = [record, *_instantiate_all(cfg.get("callbacks"))]
    requeue_signal = cfg.get("slurm", {}).get("requeue_signal", "USR2")
    return ComposedRun(cfg, output_dir, datamodule, module,
                       _trainer(cfg, callbacks, requeue_signal),
                       _instantiate_all(cfg.get("results")), record, requeue_signal)


def fit_run(run: ComposedRun) -> None:
    """Fit on the training split; continue from the run's own checkpoint where there is one."""
    run.resumed_from = checkpoint_to_resume(run.cfg, run.output_dir, run.module)
    with restore_failures(run.resumed_from, lambda: run.record.started):
        run.trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=run.resumed_from,
                        weights_only=True)


def evaluate_run(run: ComposedRun) -> None:
    """The one evaluation pass: the tested weights over the inner-validation and test splits,
    on the run's device and precision; refused when their predictions are broken."""
    trainer, module = run.trainer, run.module
    ckpt = run.cfg.get("test_ckpt", "best")
    if ckpt == "best" and not getattr(trainer.checkpoint_callback, "best_model_path", ""):
        ckpt = None  # no checkpoint callback: test the weights as they are
    check_resumed_test(trainer, ckpt, module, run.resumed_from)
    trainer.test(module, datamodule=run.datamodule, ckpt_path=ckpt, verbose=False,
                 weights_only=True)
    tested_epoch = module.best_epoch if ckpt == "best" else trainer.current_epoch
    check_predictions(module.evaluation, tested_epoch)
    check_precision(module.precision_check, str(trainer.precision), tested_epoch)


def write_results(run: ComposedRun) -> RunResults:
    """On rank 0: each writer's section in the configured order, ``metrics.json`` once, W&B."""
    results = RunResults(run.output_dir)
    if not run.trainer.is_global_zero:
        return results
    remove_requeue_checkpoints(run.output_dir)  # superseded by the finished run's checkpoints
    fitted = fitted_run(run)
    tail = time.perf_counter()
    for writer in run.writers:
        writer.add_results(results, fitted)
    if results.metrics:
        results.add({"results_seconds": round(time.perf_counter() - tail, 2)})
        if run.module.precision_check:  # reduced precision: what float32 said of it
            results.add({"float32_check": run.module.precision_check})
        results.write()
        log_results(run.trainer.loggers, results.metrics, results.tables, results.figures)
    return results


def fitted_run(run: ComposedRun) -> FittedRun:
    """What the results writers are given once the evaluation pass has run."""
    module, trainer = run.module, run.trainer
    tested = getattr(trainer, "ckpt_path", None)
    return FittedRun(
        evaluation=FoldEvaluation(module.loss, module.evaluation["val"],
                                  module.evaluation["test"]),
        facts=run.datamodule.facts, settings=settings_now(run.cfg),
        num_params=count_parameters(module.net), best_epoch=int(module.best_epoch) + 1,
        epochs=int(trainer.current_epoch), tested_checkpoint=Path(tested) if tested else None,
        history=list(run.record.history), train_seconds=run.record.train_seconds,
        timing=run.record.timing())


# -- composing's helpers ---------------------------------------------------------------------
def _instantiate_all(group: DictConfig | None) -> list:
    """Objects of a config group whose entries may be null (switched off)."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _trainer(cfg: DictConfig, callbacks: list, requeue_signal: str) -> pl.Trainer:
    """Lightning's Trainer with the run's callbacks and loggers, and under SLURM the plugin that
    saves a checkpoint at the requeue signal."""
    loggers = _instantiate_all(cfg.get("logger"))
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), *slurm_plugins(requeue_signal)]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                       **({"plugins": plugins} if plugins else {}))


def _apply_speed_switches(net: torch.nn.Module, speed: DictConfig | dict) -> None:
    """channels-last weights and in-place torch.compile (state-dict keys stay the same)."""
    if speed.get("channels_last"):
        net.to(memory_format=torch.channels_last)
    if speed.get("compile"):
        net.compile()


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
