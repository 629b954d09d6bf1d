"""Item 5: phantom generation time (seconds for the paper-size cohort on this machine)."""

from __future__ import annotations

import os
import shutil
import time

from bone_age.bench.common import Ctx, entry
from bone_age.phantom import generate_cohort


def run(ctx: Ctx) -> list[dict]:
    n = ctx.phantom_subjects
    out = ctx.workdir / f"phantom_{n}"
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    generate_cohort(out, subjects=n, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    load_after = os.getloadavg()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    shutil.rmtree(out, ignore_errors=True)
    # the target is for 4474 subjects: scale it for other sizes
    target = 120.0 * n / 4474
    return [entry(f"5 phantom generation, {n} subjects", seconds, "s", round(target, 1), "<=",
                  repeats=1,
                  note=(f"generate_cohort(workers=all {os.cpu_count()} cores), "
                        f"{n / seconds:.1f} subjects/s, {size / 1e9:.2f} GB written; 1-min load "
                        f"average {load_before[0]:.1f} before, {load_after[0]:.1f} after (a "
                        f"load above {os.cpu_count()} means other jobs shared the cores); target "
                        f"120 s for 4474 subjects, scaled to {n}"),
                  subjects_per_s=n / seconds, loadavg_before=load_before,
                  loadavg_after=load_after)]
