"""A run and a sweep say early how long they will take: no paper-size CPU run starts silently."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from omegaconf import OmegaConf

from bone_age.training.callbacks.progress import EpochProgress
from bone_age.training.sweep import SweepProgress, sweep_size


def _hydra(task: list[str], params: dict | None = None):
    return OmegaConf.create({"sweeper": {"params": params or {}}, "overrides": {"task": task}})


def test_sweep_size_counts_the_grid_as_hydra_does():
    assert sweep_size(_hydra(["model=vgg16,resnet50,inception", "loss=mse,softmax,mv"])) == 9
    assert sweep_size(_hydra(["data.fold=range(5)", "seed=1"])) == 5
    # The table1 preset's params, one of them narrowed on the command line.
    params = {"model": "inception,resnet50,vgg16,multi_vgg16", "loss": "mse,softmax,mv",
              "data.fold": "range(5)"}
    assert sweep_size(_hydra([], params)) == 60
    assert sweep_size(_hydra(["data.fold=0"], params)) == 12
    assert sweep_size(_hydra(["loss=mv"])) == 1


def test_a_paper_size_sweep_on_a_cpu_is_announced_as_such(caplog, tmp_path):
    config = OmegaConf.create({
        "hydra": {"sweep": {"dir": str(tmp_path)}, **_hydra(["model=vgg16,multi_vgg16",
                                                              "loss=mse,mv"])},
        "data": {"image_size": [224, 224]}, "trainer": {"accelerator": "cpu"}})
    with caplog.at_level(logging.INFO, logger="bone_age"):
        SweepProgress().on_multirun_start(config)
    text = caplog.text
    assert f"sweep: 4 runs into {tmp_path}" in text
    assert "224x224 pixels a view on a CPU" in text and "experiment=table1_cpu" in text
    caplog.clear()
    config.data.image_size = [64, 32]  # CPU size: no warning
    with caplog.at_level(logging.INFO, logger="bone_age"):
        SweepProgress().on_multirun_start(config)
    assert "sweep: 4 runs" in caplog.text and "on a CPU" not in caplog.text


def test_a_run_estimates_its_time_from_its_first_steps(caplog):
    trainer = SimpleNamespace(num_training_batches=100, max_epochs=50, current_epoch=0,
                              early_stopping_callback=None)
    progress = EpochProgress(every_s=1000, estimate_steps=2)
    with caplog.at_level(logging.INFO, logger="bone_age"):
        progress.on_train_epoch_start(trainer, None)
        for step in range(3):
            time.sleep(0.05 if step else 0.3)  # the first step's warm-up is left out
            progress.on_train_batch_end(trainer, None, None, None, step)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate:")]
    assert len(lines) == 1, caplog.text
    step_s = float(lines[0].split()[1])
    assert 0.04 <= step_s < 0.2, lines[0]  # not dominated by the 0.3 s first step
    assert "100 steps an epoch" in lines[0] and "for 50 epochs" in lines[0]
