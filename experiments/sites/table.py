"""Within-site vs held-out-site MAE per site, from sweeps of ``experiment=sites``.

    python experiments/sites/table.py NAME=SWEEP [NAME=SWEEP ...] --cohort MANIFEST --out DIR

Each SWEEP holds the runs of one variant (data.split=stratified,site x data.fold=0,1,2). The
sites of the test subjects come from the cohort's manifest (its pseudonymous ``site`` column).
Within-site: the pooled out-of-fold predictions of the stratified folds, by site; held-out: the
fold that tested that site. Writes DIR/results.md and DIR/results.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def _sites(manifest: Path) -> dict[str, str]:
    with manifest.open(newline="") as f:
        return {r["subject_id"]: r["site"] for r in csv.DictReader(f)}


def _errors(sweep: Path, site_of: dict[str, str]) -> dict[str, dict[str, list[float]]]:
    """split -> site -> absolute errors of the test subjects of that site."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for metrics_file in sorted(sweep.glob("*/metrics.json")):
        metrics = json.loads(metrics_file.read_text())
        split = metrics.get("split") or metrics.get("settings", {}).get("data.split", "stratified")
        with (metrics_file.parent / "predictions.csv").open(newline="") as f:
            for r in csv.DictReader(f):
                err = abs(float(r["pred_age"]) - float(r["age"]))
                out[split][site_of[r["subject_id"]]].append(err)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweeps", nargs="+", help="NAME=SWEEP_DIR")
    p.add_argument("--cohort", type=Path, required=True, help="the cohort's manifest.csv")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    site_of = _sites(args.cohort)
    sites = sorted(set(site_of.values()))
    rows = []
    for spec in args.sweeps:
        name, sweep = spec.split("=", 1)
        errors = _errors(Path(sweep), site_of)
        within_all, held_all = [], []
        for site in sites:
            within, held = errors["stratified"][site], errors["site"][site]
            within_all += within
            held_all += held
            rows.append([name, site, len(within), np.mean(within), len(held), np.mean(held),
                         np.mean(held) - np.mean(within)])
        rows.append([name, "pooled", len(within_all), np.mean(within_all), len(held_all),
                     np.mean(held_all), np.mean(held_all) - np.mean(within_all)])
    args.out.mkdir(parents=True, exist_ok=True)
    header = ["variant", "site", "n within", "MAE within-site", "n held-out", "MAE held-out site",
              "rise"]
    with (args.out / "results.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                       for v in r) + " |")
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
