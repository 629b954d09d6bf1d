"""One GPU visit of the Table 1 campaign: build the phantom, run the next unfinished runs while
the budget allows, pack what finished.

Each run is the user's own command (``python -m bone_age.run model=M loss=L data.fold=K
trainer=gpu``) in a process of its own, so a run that outlives the budget is stopped without
harming the others, and its wall time is the one a user would see. A run is started only if
its expected time fits in what is left of the budget; what is left undone is said in the
visit's record. With ``--jobs K`` up to K runs of launch-bound models (``plan.SHARES_GPU``)
run at once, each still its own command and process group; the phantom and its cache are built
once before any run starts, and the runs only read them (entries are written atomically, and a
run finds every entry there). Each run's record says which runs it overlapped. Checkpoints stay
on the machine: the archive holds each finished run's small
files (``plan.RUN_FILES`` and its log) and ``visit.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from bone_age.bench.campaign.estimate import read_gpu_rates
from bone_age.bench.campaign.plan import (
    RUN_FILES,
    SHARE_COST,
    CampaignError,
    Run,
    expected_seconds,
    may_share,
    next_runs,
    read_visits,
    run_records,
    shared_seconds,
)
from bone_age.bench.gpu.busy import GpuBusy

# Paper scale: the paper's settings are the configuration's defaults (conf/); these only place
# the run on the GPU's fast path and keep its console to one line an epoch.
PAPER = ["trainer=gpu", "data.progress=false"]
# A dry run on a CPU: the same steps on a 40-subject phantom, tiny images, a tiny trunk, 1 epoch.
DRY = ["trainer=cpu", "data.subjects=40", "data.image_size=[32,16]", "model.backbone=test_resnet",
       "data.batch_size=8", "data.cache_workers=0", "data.num_workers=0", "trainer.max_epochs=1",
       "data.progress=false"]
LOG_FILE = "run.log"
# At most this many runs at once on the one GPU (each its own process, loaders and memory).
MAX_JOBS = 4
PHASES = ("setup_seconds", "train_seconds", "evaluation_seconds", "results_seconds")


def run_overrides(run: Run, work: Path, dry_run: bool,
                  compiled: frozenset[str] = frozenset()) -> list[str]:
    """The command-line overrides of one campaign run; ``compiled``: the models run with
    ``speed.compile=true``."""
    return [f"model={run.model}", f"loss={run.loss}", f"data.fold={run.fold}",
            *(DRY if dry_run else PAPER),
            *(["speed.compile=true"] if run.model in compiled else []),
            f"paths.data_dir={work / 'data'}", f"hydra.run.dir={work / 'runs' / run.name}"]


def prepare_cohort(work: Path, dry_run: bool) -> dict[str, Any]:
    """Build the phantom and its cache as every run will use them, timed; its yardsticks."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from bone_age.bench.gpu.paper_scale import build_cohort
    from bone_age.utils.configs import CONF_DIR

    overrides = [o for o in run_overrides(all_first(), work, dry_run)
                 if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):  # what Hydra sets when it runs a job (paths resolve from them)
        cfg.hydra.runtime.output_dir = str(work)
        cfg.hydra.runtime.cwd = str(work)
    HydraConfig.instance().set_config(cfg)
    dm, took = build_cohort(cfg)
    info = json.loads((dm.manifest_path().parent / "phantom_info.json").read_text())
    return {"build_s": round(took["phantom_s"], 1), "cache_s": round(took["cache_s"], 1),
            "subjects": took["subjects"], "version": info.get("version"),
            "bayes_mae_floor": info.get("bayes_mae_floor"), "oracle_mae": info.get("oracle_mae")}


def all_first() -> Run:
    """Any run: the cohort and its cache are the same for all."""
    return Run("multi_vgg16", "mv", 0)


def machine() -> dict[str, Any]:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cores": os.cpu_count(), "python": platform.python_version()}


@dataclass
class Job:
    """A run started by the visit: its process (group), log, start and expected time."""

    run: Run
    proc: subprocess.Popen
    log: IO[str]
    start: float
    expected_s: float
    basis: str


def start_run(run: Run, work: Path, command: list[str], expected_s: float = 0.0,
              basis: str = "") -> Job:
    """Start ``command`` for ``run`` in a new session (its own process group, so that the run
    and its loader workers are stopped together), its output in the run's log."""
    out = work / "runs" / run.name
    out.mkdir(parents=True, exist_ok=True)
    log = (out / LOG_FILE).open("w")
    start = time.time()
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Job(run, proc, log, start, expected_s, basis)


def stop(job: Job) -> None:
    """Kill the run and its loader workers (the whole group) and reap it."""
    with contextlib.suppress(ProcessLookupError):  # it ended between the poll and the kill
        os.killpg(job.proc.pid, signal.SIGKILL)
    job.proc.wait()


def run_record(job: Job, work: Path, code: int | None, end: float) -> dict[str, Any]:
    """A started run's record once it ended (``code`` None: stopped at the budget)."""
    job.log.close()
    run, out = job.run, work / "runs" / job.run.name
    finished = code == 0 and (out / "metrics.json").is_file()
    record = {"name": run.name, "model": run.model, "loss": run.loss, "fold": run.fold,
              "start": job.start, "end": end, "wall_s": round(end - job.start, 1),
              "exit": code, "finished": finished,
              "why": "" if finished else "stopped at the visit's budget" if code is None
              else f"exit {code}: see {run.name}/{LOG_FILE} on the machine"}
    if finished:  # the run's own phases; what the wall time holds beyond them is start-up
        metrics = json.loads((out / "metrics.json").read_text())
        phases = {k: metrics[k] for k in PHASES if isinstance(metrics.get(k), (int, float))}
        record.update(phases, epochs=metrics.get("epochs"),
                      other_s=round(record["wall_s"] - sum(phases.values()), 1))
    return record


def schedule(todo: list[Run], work: Path, command: Callable[[Run], list[str]],
             expect: Callable[[Run], tuple[float, str]], deadline: float, jobs: int = 1,
             share_cost: float = SHARE_COST, max_runs: int | None = None,
             done: Callable[[dict[str, Any]], None] | None = None,
             poll_s: float = 0.2) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``todo`` in order, up to ``jobs`` at once, each stopped at ``deadline``.

    A run starts only when it may share the GPU with those running (``plan.may_share``: a
    compute-bound run waits for an empty GPU, and nothing starts beside it), and only if its
    expected time, scaled for the runs it would share the GPU with (``plan.shared_seconds``),
    fits before the deadline, and the running runs' do too at that sharing. When it does not
    fit but runs are going, it waits for them (it would share less); when it does not fit alone
    it is not started and nor is any later run (a later, shorter run does not jump the queue).
    Each run's record gets ``jobs`` (the most runs that ran at once during it, itself
    included) and ``overlapped`` (the runs it shared the GPU with). Returns the records of the
    started runs, in start order, and the not-started entry (at most one). ``done`` is called
    with each record as its run ends (the visit's estimates learn from it).
    """
    if not 1 <= jobs <= MAX_JOBS:
        raise CampaignError(f"visit: jobs must be 1 to {MAX_JOBS}, got {jobs}")
    pending, running = list(todo), list[Job]()
    records: list[dict[str, Any]] = []
    not_started: list[dict[str, Any]] = []
    started = 0
    try:
        while pending or running:
            now = time.time()
            for job in list(running):
                code = job.proc.poll()
                if code is None and now < deadline:
                    continue
                if code is None:
                    stop(job)
                running.remove(job)
                record = run_record(job, work, code, time.time())
                record.update(expected_s=round(job.expected_s), basis=job.basis)
                records.append(record)
                print(f"visit: {job.run.name} "
                      f"{'finished' if record['finished'] else record['why']} in "
                      f"{record['wall_s']:.0f} s", flush=True)
                if done is not None:
                    done(record)
            while pending and len(running) < jobs and (max_runs is None or started < max_runs):
                run = pending[0]
                if not may_share(run, (j.run for j in running)):
                    break  # waits for the GPU to empty; the order is kept
                sharing = len(running) + 1
                expected, basis = expect(run)
                left = deadline - time.time()
                fits = shared_seconds(expected, sharing, share_cost) <= left and all(
                    j.start + shared_seconds(j.expected_s, sharing, share_cost) <= deadline
                    for j in running)
                if not fits:
                    if not running:
                        not_started.append({"name": run.name, "expected_s": round(expected),
                                            "basis": basis, "left_s": round(left)})
                        pending.clear()
                    break  # with runs going: wait for one to end, then share less
                pending.pop(0)
                print(f"visit: {run.name} (expected {expected:.0f} s alone, {sharing} at once, "
                      f"{left:.0f} s left)", flush=True)
                running.append(start_run(run, work, command(run), expected, basis))
                started += 1
            if max_runs is not None and started >= max_runs:
                pending.clear()
            if running:
                time.sleep(poll_s)
    finally:  # an error or Ctrl-C in the visit leaves no run behind
        for job in running:
            stop(job)
            job.log.close()
    records.sort(key=lambda r: r["start"])
    for record in records:  # which runs shared the GPU, from the recorded times
        others = [r for r in records if r is not record
                  and r["start"] < record["end"] and record["start"] < r["end"]]
        record["overlapped"] = [r["name"] for r in others]
        # The most at once: at some run's start inside this one, count those going then.
        starts = [record["start"]] + [r["start"] for r in others if r["start"] > record["start"]]
        record["jobs"] = max(1, *(sum(1 for r in records if r["start"] <= t < r["end"])
                                  for t in starts))
    return records, not_started


def visit(out: Path, campaign: Path, budget_s: float, started: float | None = None,
          dry_run: bool = False, max_runs: int | None = None,
          gpu_results: Path | None = None, jobs: int = 1,
          share_cost: float = SHARE_COST, compiled: frozenset[str] = frozenset()) -> Path:
    """Run the campaign's next runs within ``budget_s`` from ``started``; returns the archive.

    Args:
        out: folder for the archive (and ``work/``: the phantom, caches, run folders).
        campaign: the campaign folder (``experiments/table1``): which runs are done, and the
            records of earlier visits for the expected run times.
        budget_s: seconds the whole visit may take, from ``started``.
        started: when the visit began (``time.time()``; the wrapper's start, so that the wheel
            install counts); now if None.
        dry_run: tiny settings on the CPU (checks every step; numbers mean nothing).
        max_runs: start at most this many runs.
        gpu_results: the GPU check's results.json (its rates estimate the runs of models not
            yet recorded); none if None.
        jobs: at most this many runs at once on the GPU (launch-bound models only; see
            ``schedule``).
        share_cost: each further run sharing the GPU adds this share of a run's expected time
            (``plan.shared_seconds``; 1: the runs are serialised, the worst case).
        compiled: models whose runs get ``speed.compile=true``.
    """
    started = time.time() if started is None else started
    # NaN would make every comparison with the deadline false (runs started without end).
    if not (math.isfinite(budget_s) and budget_s > 0 and math.isfinite(started)):
        raise CampaignError(f"visit: the budget {budget_s} s from {started} is not a finite "
                            "time span from a finite start")
    if max_runs is not None and max_runs < 1:
        raise CampaignError(f"visit: max_runs must be at least 1, got {max_runs}")
    if not 1 <= jobs <= MAX_JOBS or not 0 <= share_cost <= 1:
        raise CampaignError(f"visit: jobs must be 1 to {MAX_JOBS} and share_cost 0 to 1, got "
                            f"{jobs} and {share_cost}")
    deadline = started + budget_s
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # The first import of matplotlib on a new machine builds its font cache (~20 s): done while
    # the phantom is built, not inside the first run.
    fonts = subprocess.Popen([sys.executable, "-c", "import matplotlib.pyplot"])
    busy = GpuBusy().start()
    record: dict[str, Any] = {"id": stamp, "dry_run": dry_run, "budget_s": budget_s,
                              "machine": machine(), "runs": [], "not_started": []}
    t = time.time()
    record["phantom"] = prepare_cohort(work, dry_run)
    fonts.wait()
    record["prepare_s"] = round(time.time() - t, 1)
    records = run_records(read_visits(campaign / "visits.json"))
    rates = read_gpu_rates(gpu_results) if gpu_results is not None else None
    record.update(jobs=jobs, share_cost=share_cost, compiled=sorted(compiled))

    def learned(done: dict[str, Any]) -> None:
        done.update(busy.share(done["start"], done["end"]) or {})
        if done["finished"]:  # later runs of its model are estimated from it
            records[done["name"]] = done

    record["runs"], record["not_started"] = schedule(
        next_runs(campaign / "runs"), work,
        lambda run: [sys.executable, "-m", "bone_age.run",
                     *run_overrides(run, work, dry_run, compiled)],
        lambda run: expected_seconds(run, records, rates), deadline, jobs, share_cost,
        max_runs, learned)
    busy.stop()
    record["wall_s"] = round(time.time() - started, 1)
    return pack(out / f"table1_visit_{stamp}.tar.gz", work, record)


def pack(archive: Path, work: Path, record: dict[str, Any]) -> Path:
    """``visit.json`` and the small files of every finished run, one archive."""
    tmp = archive.with_name(archive.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        data = json.dumps(record, indent=2).encode()
        info = tarfile.TarInfo("visit.json")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, fileobj=io.BytesIO(data))
        for run in (r for r in record["runs"] if r["finished"]):
            folder = work / "runs" / run["name"]
            for name in (*RUN_FILES, LOG_FILE):
                if (folder / name).is_file():
                    tar.add(folder / name, arcname=f"runs/{run['name']}/{name}")
    os.replace(tmp, archive)
    return archive
