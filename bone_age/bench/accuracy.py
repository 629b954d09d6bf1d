"""Item 8: time to accuracy of ``experiment=phantom_bench`` against the cohort's yardsticks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import OmegaConf

from bone_age.bench.common import entry, write_results

RECIPE = "phantom_bench"


def train(run_dir: Path) -> float:
    """Run the recipe into ``run_dir``; returns its wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bone_age.run", f"experiment={RECIPE}",
                    f"hydra.run.dir={run_dir}"], check=True)
    return time.perf_counter() - t0


def cohort_dir(run_dir: Path) -> Path:
    """The DataModule's ``phantom_cohort`` of the run (data_dir/phantom/n{subjects}_seed{seed})."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    data_dir = Path(os.environ.get("BONE_AGE_DATA", Path.cwd() / "data"))
    return data_dir / "phantom" / f"n{cfg.data.subjects}_seed{cfg.seed}"


def run(run_dir: Path, out_dir: Path, cohort: Path | None = None,
        wall_seconds: float | None = None) -> list[dict]:
    """Entries comparing the run's test MAE with its cohort's bayes_mae_floor and oracle_mae."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cohort = cohort or cohort_dir(run_dir)
    info = json.loads((cohort / "phantom_info.json").read_text())
    oracle, floor, mae = info["oracle_mae"], info["bayes_mae_floor"], metrics["mae"]
    ratio = mae / oracle
    note = (f"{RECIPE}: test MAE {mae:.3f} y on {metrics['n_test']} held-out subjects (fold "
            f"{metrics['fold']}), oracle_mae {oracle:.3f} y, bayes_mae_floor {floor:.3f} y, "
            f"baseline (training mean) {metrics['baseline_mae']:.3f} y, r "
            f"{metrics['pearson_r']:.3f}; training {metrics['train_seconds']:.0f} s")
    if wall_seconds is not None:
        note += f", whole run {wall_seconds:.0f} s"
    results = [
        entry("8 time to accuracy: test MAE / oracle MAE", ratio, "ratio", 1.25, "<=",
              repeats=1, note=note, mae=mae, oracle_mae=oracle, bayes_mae_floor=floor,
              train_seconds=metrics["train_seconds"], wall_seconds=wall_seconds),
        entry("8 time to accuracy: test MAE", mae, "years", round(1.25 * oracle, 3), "<=",
              repeats=1, note=f"bayes_mae_floor {floor:.3f} y (best possible)"),
        entry("8 time to accuracy: training time", metrics["train_seconds"], "s", 1200, "<=",
              repeats=1, note="target: at most 20 minutes on 2 free cores"),
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "metrics.json", out_dir / "metrics.json")
    write_results(results, out_dir, notes=(
        f"Recipe: `python -m bone_age.run experiment={RECIPE} hydra.run.dir={run_dir}` "
        f"(conf/experiment/{RECIPE}.yaml), yardsticks from `{cohort}/phantom_info.json`.\n"))
    return results
