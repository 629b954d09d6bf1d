"""Scale-out on CPU: DDP with gloo (alone and inside a multirun), and kill-and-resume."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import tiny_overrides

pytestmark = pytest.mark.slow


def run(args: list[str], timeout: int = 600, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bone_age.run", *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def predictions(folder) -> list[tuple[str, str]]:
    with (folder / "predictions.csv").open() as f:
        return [(r["subject_id"], r["pred_age"]) for r in csv.DictReader(f)]


def test_ddp_on_two_cpu_processes_matches_one_process(cohort, tmp_path):
    base = [*tiny_overrides(cohort, tmp_path), "trainer.max_epochs=2", "model=vgg16"]
    one, two = tmp_path / "one", tmp_path / "two"
    done = run([*base, f"hydra.run.dir={one}"])
    assert done.returncode == 0, done.stderr[-2000:]
    done = run([*base, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                f"hydra.run.dir={two}"])
    assert done.returncode == 0, done.stderr[-2000:]
    m1 = json.loads((one / "metrics.json").read_text())
    m2 = json.loads((two / "metrics.json").read_text())
    assert m2["n_test"] == m1["n_test"]  # all ranks' predictions, each study once
    assert m2["epochs"] == m1["epochs"] == 2
    assert abs(m2["mae"] - m1["mae"]) < 0.5
    assert len(list(tmp_path.rglob("metrics.json"))) == 2  # no stray folder from rank 1


def test_ddp_inside_a_multirun(cohort, tmp_path):
    sweep = tmp_path / "sweep"
    done = run(["-m", *tiny_overrides(cohort, tmp_path), "model=vgg16", "data.fold=0,1",
                "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                f"hydra.sweep.dir={sweep}"], timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted(p.parent.name for p in sweep.rglob("metrics.json"))
    assert runs == ["0_vgg16_mv_fold0", "1_vgg16_mv_fold1"]
    assert (sweep / "table1.md").exists()


def test_same_seed_same_predictions_other_seed_others(cohort, tmp_path):
    base = [*tiny_overrides(cohort, tmp_path), "trainer.max_epochs=2", "model=vgg16"]
    for name, extra in (("a", ["seed=1"]), ("b", ["seed=1"]), ("c", ["seed=2"]),
                        ("d", ["seed=1", "data.split_seed=7"])):
        assert run([*base, *extra, f"hydra.run.dir={tmp_path / name}"]).returncode == 0
    assert predictions(tmp_path / "a") == predictions(tmp_path / "b")
    assert predictions(tmp_path / "a") != predictions(tmp_path / "c")
    # A seed repeat tests the same subjects; the split's own seed draws other folds.
    tested = {name: {s for s, _ in predictions(tmp_path / name)} for name in "acd"}
    assert tested["a"] == tested["c"] and tested["a"] != tested["d"]


def test_seed_leaves_the_phantom_cohort_and_folds_alone():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        default = compose("config")
        repeat = compose("config", overrides=["seed=3"])
        other = compose("config", overrides=["data.cohort_seed=5", "data.split_seed=6"])
    assert default.data.source.seed == repeat.data.source.seed == 42
    assert default.data.split_seed == repeat.data.split_seed == 42
    assert repeat.data.seed == 3 and other.data.source.seed == 5 and other.data.split_seed == 6


def test_killed_run_resumes_to_the_same_predictions(cohort, tmp_path):
    base = [*tiny_overrides(cohort, tmp_path), "trainer.max_epochs=4", "model=vgg16",
            "augment=default"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run([*base, f"hydra.run.dir={whole}"]).returncode == 0
    crash = run([*base, f"hydra.run.dir={killed}", "+callbacks.killer._target_=tests.killer."
                 "KillAfterEpoch", "+callbacks.killer.epoch=1"])
    assert crash.returncode == -9 and not (killed / "metrics.json").exists()
    done = run([*base, f"hydra.run.dir={killed}", "resume=true"])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stdout + done.stderr
    assert predictions(killed) == predictions(whole)
    again = run([*base, f"hydra.run.dir={killed}", "resume=true"])
    assert "already finished" in again.stdout + again.stderr


def _fake_slurm(tmp_path) -> dict:
    """SLURM's job variables, and an ``scontrol`` that records the requeue and then ends the job
    with SIGKILL, as SLURM does to a job it requeues."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\nkill -9 $PPID\n')
    scontrol.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "bone-age", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


def test_slurm_signal_saves_requeues_and_resumes_mid_epoch(cohort, tmp_path):
    # 30 training studies / batch 8 = 3 steps an epoch: step 4 is in the middle of epoch 2.
    base = [*tiny_overrides(cohort, tmp_path), "trainer.max_epochs=3", "model=vgg16",
            "augment=default"]
    whole, job = tmp_path / "whole", tmp_path / "job"
    assert run([*base, f"hydra.run.dir={whole}"]).returncode == 0
    slurm = _fake_slurm(tmp_path)
    base += ["+callbacks.signal._target_=tests.killer.SignalAtStep", "+callbacks.signal.step=4"]
    first = run([*base, f"hydra.run.dir={job}"], env=slurm)
    assert first.returncode == -9, first.stderr[-2000:]  # ended by the (fake) requeue
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (job / "hpc_ckpt_1.ckpt").exists() and not (job / "metrics.json").exists()
    # The requeued job is the same command in the same environment; no resume=true needed.
    again = run([*base, f"hydra.run.dir={job}"], env=slurm)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "hpc_ckpt_1.ckpt" in (job / "run.log").read_text()
    assert predictions(job) == predictions(whole)
    assert not list(job.glob("hpc_ckpt_*.ckpt"))  # superseded once the run finished


def test_unknown_requeue_signal_is_a_one_line_error(cohort, tmp_path):
    done = run([*tiny_overrides(cohort, tmp_path), "slurm.requeue_signal=USR9",
                f"hydra.run.dir={tmp_path / 'run'}"], env=_fake_slurm(tmp_path))
    assert done.returncode == 2
    said = done.stdout + done.stderr
    assert "slurm.requeue_signal: 'USR9' is not a signal name" in said
    assert "Traceback" not in said


def test_submitit_handler_is_set_aside_for_lightnings_and_restored(monkeypatch):
    from bone_age.training.cluster import lightning_handles_requeue

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "bone-age")
    def submitit_handler(*_):
        return None

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with lightning_handles_requeue("USR2"):
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler
    finally:
        signal.signal(signal.SIGUSR2, previous)


def _job_interval(job_dir) -> tuple[float, float]:
    """When a job started (Hydra saved its config) and ended (it wrote its metrics)."""
    return ((job_dir / ".hydra" / "config.yaml").stat().st_mtime,
            (job_dir / "metrics.json").stat().st_mtime)


@pytest.mark.parametrize("launcher", [
    ["hydra/launcher=ray_local", "+hydra.launcher.ray.init.num_cpus=2"],
    ["hydra/launcher=joblib_local", "hydra.launcher.n_jobs=2"],
], ids=["ray", "joblib"])
def test_launcher_runs_two_jobs_concurrently(launcher, cohort, tmp_path):
    sweep = tmp_path / "sweep"
    done = run(["-m", *launcher,
                *tiny_overrides(cohort, tmp_path), "model=vgg16", "data.fold=0,1",
                "trainer.max_epochs=3", f"hydra.sweep.dir={sweep}"], timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    (s0, e0), (s1, e1) = (_job_interval(p) for p in sorted(sweep.glob("*_fold[0-9]")))
    assert s0 < e1 and s1 < e0, "the two jobs did not overlap in time"
    assert (sweep / "table1.md").exists()


def test_slurm_launcher_config_composes():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "experiment=table1",
                                           "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.max_num_timeout) == ("gpu", 1, 5)
    assert launcher.signal_delay_s == 120 and cfg.slurm.requeue_signal == "USR2"
    assert cfg.hydra.sweeper.params["data.fold"] == "range(5)"
