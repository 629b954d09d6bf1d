"""The ablation table from a sweep folder: one row per cell, plus the cohort's yardsticks.

    python experiments/ablation/table.py multirun/ablation [--out experiments/ablation]

Reads each run's metrics.json (with the CalibrationWriter's keys) and calibration.json, and the
phantom cohort's phantom_info.json (floor and oracle MAE). Writes results.md, results.csv and
reliability.png (nominal vs observed coverage of every cell with a predicted distribution).
``--repeat SWEEP`` (the same cells with another seed) adds its MAE as a column, to show noise;
``--repeat-md FILE`` also writes the repeat's own full table there (results_seed1.md).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ORDER = ["ablation", "ablation_sex", "ablation_single", "ablation_pad", "ablation_softmax",
         "ablation_mse"]
COLUMNS = ["cell", "views", "sex input", "input", "loss", "MAE", "r", "cov50", "cov90",
           "T", "cov50 (T)", "cov90 (T)", "gap r(age)", "corr. gap r(age)", "train s"]


def _fmt(value, digits: int = 2) -> str:
    return "" if value is None or value != value else f"{value:.{digits}f}"


def rows_of(sweep: Path) -> tuple[list[dict], list[dict]]:
    runs = []
    for path in sweep.rglob("metrics.json"):
        m = json.loads(path.read_text())
        cal_file = path.with_name("calibration.json")
        m["_cal"] = json.loads(cal_file.read_text()) if cal_file.exists() else {}
        runs.append(m)
    runs.sort(key=lambda m: ORDER.index(m.get("cell")) if m.get("cell") in ORDER else 99)
    rows = [{
        "cell": m.get("cell", "?"), "views": 2 if m["model"] == "multi_vgg16" else 1,
        "sex input": "yes" if m.get("use_sex") else "no",
        "input": m.get("resize", "stretch"), "loss": m["loss"],
        "MAE": _fmt(m["mae"]), "r": _fmt(m["pearson_r"]), "cov50": _fmt(m.get("calib_cov50")),
        "cov90": _fmt(m.get("calib_cov90")), "T": _fmt(m.get("temperature")),
        "cov50 (T)": _fmt(m.get("calib_cov50_T")), "cov90 (T)": _fmt(m.get("calib_cov90_T")),
        "gap r(age)": _fmt(m.get("gap_r_age")),
        "corr. gap r(age)": _fmt(m.get("gap_corrected_r_age")),
        "train s": _fmt(m.get("train_seconds"), 0),
    } for m in runs]
    return rows, runs


def yardsticks(runs: list[dict], data_dir: Path) -> dict:
    n = runs[0]["n_train"] + runs[0]["n_val"] + runs[0]["n_test"] + runs[0]["n_excluded"]
    info = json.loads((data_dir / f"n{n}_seed{runs[0].get('seed', 42)}" /
                       "phantom_info.json").read_text())
    return {"n_subjects": n, "floor": info["bayes_mae_floor"], "oracle": info["oracle_mae"],
            "baseline": runs[0]["baseline_mae"], "n_test": runs[0]["n_test"]}


def markdown(rows: list[dict], columns: list[str], ys: dict) -> str:
    """The table and a line with the cohort's size and yardsticks."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    lines += ["", f"Cohort: {ys['n_subjects']}-subject phantom, fold 0 ({ys['n_test']} test "
              f"subjects). Yardsticks: floor (Bayes) MAE {ys['floor']:.2f} y, oracle MAE "
              f"{ys['oracle']:.2f} y, baseline (training mean) MAE {ys['baseline']:.2f} y."]
    return "\n".join(lines) + "\n"


def reliability_figure(runs: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="ideal")
    for i, m in enumerate(r for r in runs if "reliability" in r["_cal"]):
        rel = m["_cal"]["reliability"]
        ax.plot(rel["level"], rel["normal"], marker="o", ms=3, color=f"C{i}", label=m["cell"])
        if "normal_T" in rel:
            ax.plot(rel["level"], rel["normal_T"], ls=":", color=f"C{i}")
    ax.set(xlabel="nominal coverage (mean ± z·SD)", ylabel="observed coverage, test fold",
           xlim=(0, 1), ylim=(0, 1), title="Ablation: reliability (dotted: temperature)")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("sweep", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).parent)
    p.add_argument("--data-dir", type=Path, default=Path("data/phantom"))
    p.add_argument("--repeat", type=Path, help="the same sweep with another seed")
    p.add_argument("--repeat-md", type=Path, help="write the repeat's own table to this file")
    args = p.parse_args()
    if args.repeat_md and not args.repeat:
        p.error("--repeat-md needs --repeat")
    rows, runs = rows_of(args.sweep)
    columns = list(COLUMNS)
    if args.repeat:
        rep_rows, rep_runs = rows_of(args.repeat)
        other = {r["cell"]: r["MAE"] for r in rep_rows}
        columns.insert(columns.index("MAE") + 1, "MAE (repeat)")
        for r in rows:
            r["MAE (repeat)"] = other.get(r["cell"], "not run")
    ys = yardsticks(runs, args.data_dir)
    with (args.out / "results.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, columns)
        w.writeheader()
        w.writerows(rows)
    table = markdown(rows, columns, ys)
    (args.out / "results.md").write_text(table)
    if args.repeat_md:
        args.repeat_md.write_text(markdown(rep_rows, COLUMNS, yardsticks(rep_runs, args.data_dir)))
    reliability_figure(runs, args.out / "reliability.png")
    print(table, end="")


if __name__ == "__main__":
    main()
