"""Checkpoints cost what they must: the tested weights without the optimizer state, the whole
training state only in last.ckpt (what resume reads), written in a background thread."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from bone_age.inference.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from bone_age.training.checkpoint_io import (
    BackgroundCheckpointIO,
    ResumeStateIO,
    is_resume_checkpoint,
)
from tests.conftest import run_in_process, tiny_overrides


def test_only_resume_checkpoints_keep_the_optimizer_state(cohort, tmp_path):
    out = tmp_path / "run"
    run_in_process([*tiny_overrides(cohort, tmp_path), "model=vgg16", "loss=mv",
                    "trainer.max_epochs=2"], out)
    (best,) = (out / "checkpoints").glob("epoch*.ckpt")
    last = out / "checkpoints" / "last.ckpt"
    tested = torch.load(best, map_location="cpu", weights_only=True)
    resume = torch.load(last, map_location="cpu", weights_only=True)
    assert "optimizer_states" not in tested and "callbacks" not in tested
    assert "state_dict" in tested and "bone_age" in tested and "calibration" in tested["bone_age"]
    assert resume["optimizer_states"] and resume["callbacks"] and "bone_age" in resume
    # Adam keeps two moments a weight: the tested file is about a third of the resume file.
    assert best.stat().st_size < 0.5 * last.stat().st_size
    load_checkpoint(best)  # predict, export and evaluate read it as before


def test_resume_checkpoint_names():
    assert is_resume_checkpoint("run/checkpoints/last.ckpt")
    assert is_resume_checkpoint("run/hpc_ckpt_3.ckpt")
    assert not is_resume_checkpoint("run/checkpoints/epoch004.ckpt")
    assert not is_resume_checkpoint("run/checkpoints/last-v1.ckpt")


def test_the_trainer_writes_through_the_async_lean_io():
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["trainer=gpu"])
    (plugin,) = instantiate(cfg.trainer.plugins)
    assert isinstance(plugin, AsyncCheckpointIO)  # BackgroundCheckpointIO
    assert isinstance(plugin.checkpoint_io, ResumeStateIO)


def test_a_second_run_into_a_busy_run_folder_is_refused_and_a_killed_ones_lock_is_not(
        cohort, tmp_path, monkeypatch):
    import os
    import signal
    import subprocess
    import sys

    import pytest

    from bone_age.training import cluster
    from bone_age.utils.outputs import LOCK_FILE, OutputError

    run = tmp_path / "run"
    holder = subprocess.Popen(  # another run holding the folder (as train() does)
        [sys.executable, "-c", "import sys, time; from bone_age.utils.outputs import "
         "folder_lock\nwith folder_lock(sys.argv[1]):\n print('held', flush=True); "
         "time.sleep(600)", str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        overrides = tiny_overrides(cohort, tmp_path)
        with pytest.raises(OutputError, match=f"{run}: the run folder is in use by another run "
                                              f"\\(process {holder.pid}\\)"):
            run_in_process(overrides, run)
        assert sorted(os.listdir(run)) == [LOCK_FILE]  # refused before any work
        # From the command line: refused before Hydra writes its .hydra/ into the folder.
        cli = subprocess.run([sys.executable, "-m", "bone_age.run", *overrides,
                              f"hydra.run.dir={run}"], capture_output=True, text=True,
                             timeout=300)
        assert cli.returncode == 2, cli.stderr[-2000:]
        said = (cli.stdout + cli.stderr).strip().splitlines()
        assert len(said) == 1 and "the run folder is in use by another run" in said[0], said
        assert sorted(os.listdir(run)) == [LOCK_FILE]
        # DDP ranks > 0 re-run the job in the same folder: they take no lock.
        monkeypatch.setenv("LOCAL_RANK", "1")
        with cluster.run_folder_lock(run):  # not refused, though the folder is held
            pass
        monkeypatch.delenv("LOCAL_RANK")
    finally:
        holder.send_signal(signal.SIGKILL)  # killed: the OS drops its lock
        holder.wait()
    assert run_in_process([*overrides, "resume=true"], run)["n_test"] > 0


def test_checkpoints_are_written_whole_and_never_into_a_fifo(tmp_path, monkeypatch):
    import os
    import stat

    import lightning_fabric.plugins.io.torch_io as torch_io
    import pytest

    from bone_age.utils.outputs import OutputError

    io = ResumeStateIO()
    fifo = tmp_path / "last.ckpt"
    os.mkfifo(fifo)  # Lightning would open it for writing and block
    with pytest.raises(OutputError, match="not a regular file"):
        io.save_checkpoint({"state_dict": {}}, fifo)
    assert stat.S_ISFIFO(fifo.lstat().st_mode)

    def killed_half_way(checkpoint, path):
        Path(path).write_bytes(b"PK half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch_io, "_atomic_save", killed_half_way)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"state_dict": {}}, tmp_path / "epoch001.ckpt")
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt"]  # the FIFO only: nothing half-written


class _Payload:
    """A pickle that creates a file when loaded with pickle's full powers."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_loads_stay_weights_only_when_the_environment_says_otherwise(
        tmp_path, monkeypatch):
    # torch's default follows this variable; Lightning's loads (trainer.fit/test(ckpt_path=...))
    # go through the project's CheckpointIO, which must not rely on that default.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    marker = tmp_path / "code_ran"
    crafted = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "epoch": _Payload(marker)}, crafted)
    for io in (ResumeStateIO(), BackgroundCheckpointIO(ResumeStateIO())):
        with pytest.raises(pickle.UnpicklingError):
            io.load_checkpoint(crafted)
    with pytest.raises(CheckpointError):
        read_checkpoint(crafted)  # what predict, evaluate, export and resume read
    assert not marker.exists()
