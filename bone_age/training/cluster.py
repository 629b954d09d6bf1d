"""The launcher's side of a run: its process, its folder, DDP's children and SLURM's requeue.

- the threads this process may use (``use_threads``), and the run folder's lock, taken by the
  launching process only (``run_folder_lock``);
- the fit and the evaluation pass as one job (``launched_job``): Lightning's DDP children re-run
  exactly this job in its folder, Lightning takes SLURM's requeue signal, and nothing of the
  job's process group is left for the next job of a sweep;
- SLURM: at the requeue signal Lightning saves a checkpoint and requeues the job. SLURM sends
  the signal ``--signal=USR2@N`` seconds before the time limit (submitit asks for USR2 by
  default; some clusters also send it at preemption). Lightning's SLURM support saves
  ``hpc_ckpt_<n>.ckpt`` in the run folder and calls ``scontrol requeue``; the requeued job
  starts the same run again and continues from that checkpoint, mid-epoch included. A finished
  run deletes them (``remove_requeue_checkpoints``).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf, open_dict
from threadpoolctl import threadpool_limits

from bone_age.utils.cores import launched_as_extra_rank, thread_count
from bone_age.utils.errors import BoneAgeError
from bone_age.utils.outputs import folder_lock

log = logging.getLogger(__name__)


class SlurmConfigError(BoneAgeError, ValueError):
    """A SLURM setting of the config that cannot be used."""


def use_threads(setting: object, trainer_cfg: DictConfig) -> None:
    """torch's and the BLAS/OpenMP pools' threads: the cores this process may use (``threads``),
    shared between the CPU DDP ranks of a machine."""
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


def run_folder_lock(output_dir: Path) -> AbstractContextManager:
    """The run folder's lock, taken by the launching process only: Lightning's DDP ranks > 0,
    another node's processes and a SLURM job's other tasks re-run this job in the same folder,
    as part of it (the variables Lightning and the launchers set to say so)."""
    return nullcontext() if launched_as_extra_rank() else folder_lock(output_dir)


@contextmanager
def launched_job(output_dir: Path, requeue_signal: str) -> Iterator[None]:
    """The fit and the evaluation pass of this job, as DDP, SLURM and a sweep need them."""
    _pin_job_for_ddp_children(str(output_dir))
    with _distributed_job(), lightning_handles_requeue(requeue_signal):
        yield


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


@contextmanager
def _distributed_job() -> Iterator[None]:
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


def requeue_signal_of(name: str) -> signal.Signals:
    """``USR2`` or ``SIGUSR2`` -> signal.SIGUSR2."""
    key = str(name).upper()
    try:
        return signal.Signals[key if key.startswith("SIG") else f"SIG{key}"]
    except KeyError:
        raise SlurmConfigError(
            f"slurm.requeue_signal: {name!r} is not a signal name (e.g. USR2, USR1)") from None


def slurm_plugins(requeue_signal: str) -> list:
    """Lightning's SLURM environment, listening on our requeue signal, when running under SLURM."""
    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=True, requeue_signal=requeue_signal_of(requeue_signal))]


@contextmanager
def lightning_handles_requeue(requeue_signal: str) -> Iterator[None]:
    """Let Lightning's handler take the requeue signal while the trainer runs.

    Lightning installs its handler only if the signal has none; the submitit worker has already
    installed its own (which requeues without saving the model), so it is set aside meanwhile.
    """
    if not SLURMEnvironment.detect():
        yield
        return
    signum = requeue_signal_of(requeue_signal)
    previous = signal.signal(signum, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signum, previous)


HPC_CHECKPOINT = "hpc_ckpt_*.ckpt"


def hpc_checkpoints(output_dir: Path) -> list[Path]:
    """Checkpoints Lightning saved at a SLURM requeue signal, oldest first."""
    found = output_dir.glob(HPC_CHECKPOINT)
    return sorted(found, key=lambda p: int(p.stem.rsplit("_", 1)[1]))


def remove_requeue_checkpoints(output_dir: Path) -> None:
    """Delete a finished run's requeue checkpoints: its own checkpoints supersede them."""
    for stale in hpc_checkpoints(output_dir):
        stale.unlink()
