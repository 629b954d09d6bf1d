"""Combine the GPU check's calls of one session into experiments/gpu/results.json and .md.

A session has ~15 minutes of GPU time, so one check may take two calls: the second runs only
what the first could not measure (``--stages``). Each figure is taken from the latest call that
measured it; failed and skipped entries are dropped where a later call has the figure. Every
entry keeps ``run`` (its folder). Usage: ``python experiments/gpu/combine.py run1 run2 ...``
(folders under experiments/gpu/, oldest first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bone_age.bench.common import write_results

HERE = Path(__file__).resolve().parent


def combine(runs: list[str]) -> list[dict]:
    latest: dict[str, dict] = {}
    for run in runs:
        for r in json.loads((HERE / run / "results.json").read_text()):
            latest[r["name"]] = {**r, "run": run}
    # a failed or skipped stage that a later call measured is superseded
    stages_measured = {n.split(" ")[0] for n, r in latest.items() if r["value"] is not None}
    return [r for n, r in latest.items()
            if r["value"] is not None or n.split(" ")[0] not in stages_measured]


if __name__ == "__main__":
    results = combine(sys.argv[1:])
    notes = ("Combined by experiments/gpu/combine.py from the calls " + ", ".join(sys.argv[1:])
             + " (each figure from the latest call that measured it; see each entry's `run`).\n")
    write_results(results, HERE, notes)
