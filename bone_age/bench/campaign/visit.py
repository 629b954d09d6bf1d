"""One GPU visit of the Table 1 campaign: build the phantom, run the next unfinished runs while
the budget allows, pack what finished.

Each run is the user's own command (``python -m bone_age.run model=M loss=L data.fold=K
trainer=gpu``) in a process of its own, so a run that outlives the budget is stopped without
harming the others, and its wall time is the one a user would see. A run is started only if
its expected time fits in what is left of the budget; what is left undone is said in the
visit's record. Checkpoints stay on the machine: the archive holds each finished run's small
files (``plan.RUN_FILES`` and its log) and ``visit.json``.
"""

from __future__ import annotations

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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bone_age.bench.campaign.estimate import read_gpu_rates
from bone_age.bench.campaign.plan import (
    RUN_FILES,
    CampaignError,
    Run,
    expected_seconds,
    next_runs,
    read_visits,
    run_records,
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
PHASES = ("setup_seconds", "train_seconds", "evaluation_seconds", "results_seconds")


def run_overrides(run: Run, work: Path, dry_run: bool) -> list[str]:
    """The command-line overrides of one campaign run."""
    return [f"model={run.model}", f"loss={run.loss}", f"data.fold={run.fold}",
            *(DRY if dry_run else PAPER), f"paths.data_dir={work / 'data'}",
            f"hydra.run.dir={work / 'runs' / run.name}"]


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


def run_one(run: Run, work: Path, dry_run: bool, limit_s: float) -> dict[str, Any]:
    """Run ``run`` in its own process (group), stopped after ``limit_s``; its record."""
    out = work / "runs" / run.name
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bone_age.run", *run_overrides(run, work, dry_run)]
    start = time.time()
    with (out / LOG_FILE).open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and its loader workers
            proc.wait()
            code = None
    end = time.time()
    finished = code == 0 and (out / "metrics.json").is_file()
    record = {"name": run.name, "model": run.model, "loss": run.loss, "fold": run.fold,
              "start": start, "end": end, "wall_s": round(end - start, 1), "exit": code,
              "finished": finished,
              "why": "" if finished else "stopped at the visit's budget" if code is None
              else f"exit {code}: see {run.name}/{LOG_FILE} on the machine"}
    if finished:  # the run's own phases; what the wall time holds beyond them is start-up
        metrics = json.loads((out / "metrics.json").read_text())
        phases = {k: metrics[k] for k in PHASES if isinstance(metrics.get(k), (int, float))}
        record.update(phases, epochs=metrics.get("epochs"),
                      other_s=round(record["wall_s"] - sum(phases.values()), 1))
    return record


def visit(out: Path, campaign: Path, budget_s: float, started: float | None = None,
          dry_run: bool = False, max_runs: int | None = None,
          gpu_results: Path | None = None) -> Path:
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
    """
    started = time.time() if started is None else started
    # NaN would make every comparison with the deadline false (runs started without end).
    if not (math.isfinite(budget_s) and budget_s > 0 and math.isfinite(started)):
        raise CampaignError(f"visit: the budget {budget_s} s from {started} is not a finite "
                            "time span from a finite start")
    if max_runs is not None and max_runs < 1:
        raise CampaignError(f"visit: max_runs must be at least 1, got {max_runs}")
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
    for run in next_runs(campaign / "runs"):
        if max_runs is not None and len(record["runs"]) >= max_runs:
            break
        expected, basis = expected_seconds(run, records, rates)
        left = deadline - time.time()
        if expected > left:
            record["not_started"].append({"name": run.name, "expected_s": round(expected),
                                          "basis": basis, "left_s": round(left)})
            break  # in order: a later, shorter run does not jump the queue
        print(f"visit: {run.name} (expected {expected:.0f} s, {left:.0f} s left)", flush=True)
        done = run_one(run, work, dry_run, left)
        done.update(busy.share(done["start"], done["end"]) or {}, expected_s=round(expected))
        record["runs"].append(done)
        if done["finished"]:
            records[run.name] = done
        print(f"visit: {run.name} {'finished' if done['finished'] else done['why']} in "
              f"{done['wall_s']:.0f} s", flush=True)
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
