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
