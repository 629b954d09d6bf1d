"""A run and a sweep say early how long they will take: no paper-size CPU run starts silently."""

from __future__ import annotations

import logging
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
        "data": {"image_size": [224, 224]}, "trainer": {"accelerator": "cpu"}, "yes": True})
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


def test_a_run_estimates_its_time_from_its_first_steps(caplog, monkeypatch):
    from bone_age.training.callbacks import progress as progress_module

    trainer = SimpleNamespace(num_training_batches=100, max_epochs=50, current_epoch=0,
                              early_stopping_callback=None)
    progress = EpochProgress(every_s=1000, estimate_steps=2)
    # A fake clock: a 0.3 s first step (its warm-up, left out), then 0.05 s steps.
    clock = iter([0.0, 0.3, 0.35, 0.40])
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    with caplog.at_level(logging.INFO, logger="bone_age"):
        progress.on_train_epoch_start(trainer, None)
        for step in range(3):
            progress.on_train_batch_end(trainer, None, None, None, step)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("estimate:")]
    assert len(lines) == 1, caplog.text
    step_s = float(lines[0].split()[1])
    assert step_s == 0.05, lines[0]  # not dominated by the 0.3 s first step
    assert "100 steps an epoch" in lines[0] and "for 50 epochs" in lines[0]


def _paper_sweep(tmp_path, **extra):
    return OmegaConf.create({
        "hydra": {"sweep": {"dir": str(tmp_path / "sweep")},
                  **_hydra(["model=vgg16,multi_vgg16", "loss=mse,mv"])},
        "data": {"image_size": [224, 224], "subjects": 4474,
                 "source": {"_target_": "bone_age.phantom.source.PhantomSource"}},
        "trainer": {"accelerator": "cpu", "max_epochs": 100}, "yes": False, **extra})


class _Terminal:
    """stdin at a terminal, with the user's answer typed."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


def test_a_paper_size_sweep_on_a_cpu_asks_before_any_work(tmp_path, monkeypatch, capsys):
    """Issue 33 item 4: refused in one line without a terminal, asked at one, yes=true goes."""
    import pytest

    from bone_age.training.sweep import SweepProgress

    config = _paper_sweep(tmp_path)
    with pytest.raises(SystemExit) as stop:  # pytest's stdin is no terminal: CI, a script
        SweepProgress().on_multirun_start(config)
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bone-age run: a sweep of 4 paper-size runs on a CPU: not started "
                           "without a terminal") and "add yes=true" in line
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    with pytest.raises(SystemExit) as stop:
        SweepProgress().on_multirun_start(config)
    assert stop.value.code == 2 and "start it? [y/N]" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    SweepProgress().on_multirun_start(config)  # goes on
    monkeypatch.setattr("sys.stdin", None)
    SweepProgress().on_multirun_start(_paper_sweep(tmp_path, yes=True))
    assert not (tmp_path / "sweep").exists()  # nothing made before the answer


def test_a_single_paper_size_cpu_run_says_so_with_its_estimate(tmp_path, caplog):
    """Issue 33 item 3: the headline run on a CPU is announced, with its time, before it
    starts; a CPU-size run is not."""
    from bone_age.training.sweep import SweepProgress, cpu_estimate

    config = _paper_sweep(tmp_path)
    assert cpu_estimate(config, cores=2) == (
        "about 2.1 days (3,221 training studies x 100 epochs at the measured CPU speed on 2 "
        "core(s); early stopping may end it sooner)")
    with caplog.at_level(logging.INFO, logger="bone_age"):
        SweepProgress().on_run_start(config)
    assert "run: a paper-size run (224x224 pixels a view) on a CPU: about " in caplog.text
    assert "experiment=cpu_base" in caplog.text
    caplog.clear()
    config.data.image_size = [128, 64]
    with caplog.at_level(logging.INFO, logger="bone_age"):
        SweepProgress().on_run_start(config)
    assert caplog.text == ""


def test_yes_is_a_setting_users_can_type():
    """``yes=true`` on the command line reaches the question (a bare YAML ``yes:`` key would
    be read as the boolean true, and the override refused)."""
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        assert OmegaConf.select(compose("config"), "yes") is False
        assert OmegaConf.select(compose("config", overrides=["yes=true"]), "yes") is True
