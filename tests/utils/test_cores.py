"""Threads follow the cores this process may use; a quiet phase still speaks every few seconds."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from threadpoolctl import threadpool_info

from bone_age.utils import console, cores
from bone_age.utils.errors import BoneAgeError


def test_usable_cores_follow_affinity_and_quota(monkeypatch, tmp_path):
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cores, "_CGROUP_V2", tmp_path / "none")
    monkeypatch.setattr(cores, "_CGROUP_V1", (tmp_path / "q", tmp_path / "p"))
    assert cores.usable_cores() == 4
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a container limited to 1.5 cores
    monkeypatch.setattr(cores, "_CGROUP_V2", quota)
    assert cores.usable_cores() == 2
    quota.write_text("max 100000\n")
    assert cores.usable_cores() == 4
    monkeypatch.setattr(cores.os, "sched_getaffinity", lambda pid: {3}, raising=False)  # taskset
    assert cores.usable_cores() == 1


def test_thread_count_setting(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    assert cores.thread_count("auto", busy=0.2) == 8
    assert cores.thread_count("auto", processes=3, busy=0.0) == 2  # CPU DDP ranks share cores
    assert cores.thread_count("auto", busy=2.7) == 5  # other jobs hold 3 of the cores
    assert cores.thread_count("auto", busy=9.0) == 1
    assert cores.thread_count(3) == 3
    for bad in (0, -2, "many", 1.5, True):
        with pytest.raises(BoneAgeError, match="^threads: .* is not allowed"):
            cores.thread_count(bad)


def test_busy_cores_sees_another_job():
    """A busy loop on this process's CPUs counts as about one busy core."""
    import subprocess
    import sys

    idle_before = cores.busy_cores(0.5)
    if idle_before > cores.usable_cores() - 1:
        pytest.skip(f"other jobs already keep {idle_before:.1f} cores busy")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy = cores.busy_cores(0.5)
    finally:
        loop.kill()
        loop.wait()
    assert busy >= idle_before + 0.6, (idle_before, busy)


def test_a_run_uses_the_cores_it_may_use(monkeypatch, caplog):
    from bone_age.training import cluster

    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "usable_cores", lambda: 1)
    try:
        with caplog.at_level(logging.INFO, logger="bone_age"):
            cluster.use_threads("auto", OmegaConf.create({"accelerator": "cpu", "devices": 1}))
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    finally:
        torch.set_num_threads(before)
        from threadpoolctl import threadpool_limits
        threadpool_limits(before)


def test_a_stalled_phase_still_speaks(capsys, monkeypatch):
    """No update for longer than every_s: a line anyway; none after close. Driven by a fake
    clock (the ticker's calls made by hand), so a loaded machine cannot change the outcome."""
    now = [0.0]
    monkeypatch.setattr(console, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    monkeypatch.setattr(console, "_tick", lambda *args: None)  # the ticker: called by hand
    beat = console.heartbeat("phantom: yardsticks", every_s=10)
    for t in (5.0, 11.0, 15.0, 22.0):
        now[0] = t
        beat._stalled()
    beat.close()
    now[0] = 40.0
    beat._stalled()
    assert capsys.readouterr().err.splitlines() == [
        "phantom: yardsticks: still working, 11 s", "phantom: yardsticks: still working, 22 s"]
    now[0] = 0.0
    bar = console._LineProgress(None, 10, "caching studies", "studies", every_s=10)
    bar.update()  # at 0 s: too soon for a line
    now[0] = 12.0  # one slow study
    bar._stalled()
    assert capsys.readouterr().err.strip() == "caching studies: 1/10 studies, 12 s"
    bar.close()


def test_the_ticker_thread_speaks_for_a_stalled_phase(capsys):
    """The real ticker thread: waits (up to a minute) for its line, asserts no timing."""
    with console.heartbeat("phantom: yardsticks", every_s=0.2):
        deadline = time.monotonic() + 60
        said = ""
        while "still working" not in said and time.monotonic() < deadline:
            time.sleep(0.05)
            said += capsys.readouterr().err
    assert said.startswith("phantom: yardsticks: still working, ")


def test_yardsticks_run_on_one_thread(monkeypatch, tmp_path):
    from bone_age.phantom import cohort

    seen = []
    real = cohort.oracle_mae
    monkeypatch.setattr(cohort, "oracle_mae", lambda *a, **k: (
        seen.append({p["num_threads"] for p in threadpool_info()}), real(*a, **k))[1])
    cohort.generate_cohort(tmp_path / "c", subjects=24, seed=3, workers=1, progress=False)
    assert seen == [{1}]
