"""Table 1 from a sweep: ``python -m bone_age.report DIR`` -> DIR/table1.md and DIR/table1.csv.

Every run below DIR that wrote ``metrics.json`` and ``predictions.csv`` is gathered. Each row is
one model and loss, laid out like the paper's Table 1: "MAE (SD)" and Pearson r computed on the
pooled out-of-fold predictions of all its folds, plus the per-fold mean +- SD of MAE and r.
Figures go to DIR/figures/: the pooled scatter of each cell and a bar chart of MAE over the grid.
With ``--wandb PROJECT`` (or a sweep run with ``logger=wandb``) Table 1 and the figures are also
logged to W&B as a ``report`` run in the sweep's group.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bone_age import plots
from bone_age.errors import EXIT_OK, EXIT_PARTIAL, command, fail
from bone_age.metrics import age_metrics

log = logging.getLogger(__name__)

MODEL_ORDER = ["inception", "resnet50", "vgg16", "multi_vgg16"]
MODEL_NAMES = {"inception": "InceptionV3", "resnet50": "ResNet50", "vgg16": "VGG16",
               "multi_vgg16": "Multiple inputs VGG16"}
LOSS_ORDER = ["mse", "softmax", "mv"]
LOSS_NAMES = {"mse": "Mean squared loss", "softmax": "Softmax loss",
              "mv": "Softmax + Mean-Variance loss"}
DEFAULT_BACKBONES = {"inception": "inception_v3", "resnet50": "resnet50", "vgg16": "vgg16",
                     "multi_vgg16": "vgg16"}


def _read_predictions(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return (np.array([float(r["age"]) for r in rows]),
            np.array([float(r["pred_age"]) for r in rows]))


def collect_runs(root: Path) -> dict[tuple[str, str, str], dict[int, dict[str, Any]]]:
    """Runs by (model, backbone, loss), then fold; a repeated fold keeps the newest run."""
    cells: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for metrics_file in sorted(root.rglob("metrics.json"), key=lambda p: p.stat().st_mtime):
        preds_file = metrics_file.with_name("predictions.csv")
        if not preds_file.exists():
            log.warning("%s: no predictions.csv beside it, left out", metrics_file.parent)
            continue
        m = json.loads(metrics_file.read_text())
        # Variants beyond the paper get rows of their own.
        extras = ["sex"] * bool(m.get("use_sex")) + ["4:1 aspect"] * (m.get("resize") == "pad")
        model = " + ".join([str(m.get("model")), *extras])
        key = (model, str(m.get("backbone")), str(m.get("loss")))
        fold = int(m.get("fold", 0))
        if fold in cells[key]:
            log.warning("%s fold %d appears twice; the newer run %s is used",
                        "/".join(key), fold, metrics_file.parent)
        age, pred = _read_predictions(preds_file)
        cells[key][fold] = {"metrics": m, "age": age, "pred": pred, "dir": metrics_file.parent}
    return cells


def summarise(cells: dict) -> list[dict[str, Any]]:
    rows = []
    def order(key):
        model, _, loss = key
        return (MODEL_ORDER.index(model) if model in MODEL_ORDER else 99, model,
                LOSS_ORDER.index(loss) if loss in LOSS_ORDER else 99, key[1])
    for key in sorted(cells, key=order):
        model, backbone, loss = key
        folds = cells[key]
        age = np.concatenate([f["age"] for f in folds.values()])
        pred = np.concatenate([f["pred"] for f in folds.values()])
        pooled = age_metrics(pred, age)
        per_fold = [age_metrics(f["pred"], f["age"]) for f in folds.values()]
        fold_mae = np.array([m["mae"] for m in per_fold])
        fold_r = np.array([m["pearson_r"] for m in per_fold])
        base, _, extra = model.partition(" + ")
        name = MODEL_NAMES.get(base, base) + (f" + {extra}" if extra else "")
        if backbone != DEFAULT_BACKBONES.get(base, backbone):
            name += f" [{backbone}]"
        rows.append({
            "key": key,
            "model": name, "loss": LOSS_NAMES.get(loss, loss), "folds": len(folds),
            "n": len(age), "mae": pooled["mae"], "mae_sd": pooled["mae_sd"],
            "r": pooled["pearson_r"],
            "fold_mae_mean": float(fold_mae.mean()), "fold_mae_sd": float(fold_mae.std(ddof=1))
            if len(fold_mae) > 1 else 0.0,
            "fold_r_mean": float(np.nanmean(fold_r)) if np.isfinite(fold_r).any() else np.nan,
            "fold_r_sd": float(np.nanstd(fold_r, ddof=1)) if np.isfinite(fold_r).sum() > 1
            else 0.0,
            "baseline_mae": float(np.mean([f["metrics"]["baseline_mae"]
                                           for f in folds.values()])),
        })
    return rows


def write_table(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    md, csv_path = out_dir / "table1.md", out_dir / "table1.csv"
    lines = [
        "| Model | Method | MAE (SD), years | r | folds | n | per-fold MAE | per-fold r "
        "| baseline MAE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in rows:
        model = r["model"] if r["model"] != previous else ""
        previous = r["model"]
        lines.append(
            f"| {model} | {r['loss']} | {r['mae']:.2f} ({r['mae_sd']:.2f}) | {r['r']:.2f} | "
            f"{r['folds']} | {r['n']} | {r['fold_mae_mean']:.2f} ± {r['fold_mae_sd']:.2f} | "
            f"{r['fold_r_mean']:.2f} ± {r['fold_r_sd']:.2f} | {r['baseline_mae']:.2f} |"
        )
    note = ("\nMAE (SD) and r on the pooled out-of-fold predictions; per-fold values are mean ± "
            "SD over folds; baseline MAE predicts each fold's training mean age.\n")
    md.write_text("\n".join(lines) + "\n" + note)
    table = _public(rows)
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]) if table else ["model"])
        writer.writeheader()
        writer.writerows(table)
    return md, csv_path


def _public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The table's columns (without the internal cell key)."""
    return [{k: v for k, v in r.items() if k != "key"} for r in rows]


def write_figures(cells: dict, rows: list[dict[str, Any]], out_dir: Path) -> dict[str, Path]:
    """Pooled out-of-fold scatter per Table 1 cell, and the MAE bar chart of the grid."""
    figures = {"mae_by_cell": plots.mae_grid_plot(rows, out_dir / "mae_by_cell.png")}
    for r in rows:
        folds = cells[r["key"]]
        age = np.concatenate([f["age"] for f in folds.values()])
        pred = np.concatenate([f["pred"] for f in folds.values()])
        name = "scatter_" + "_".join(r["key"])
        figures[name] = plots.cell_scatter_plot(
            age, pred, out_dir / f"{name}.png", f"{r['model']}, {r['loss']}", len(folds))
    return figures


def report(root: str | Path, wandb_project: str | None = None) -> Path | None:
    """Gather the runs below ``root`` into its Table 1 and figures; returns the markdown file.

    ``wandb_project``: also log Table 1 and the figures to that W&B project.
    """
    root = Path(root)
    cells = collect_runs(root)
    if not cells:
        log.warning("%s: no finished runs (metrics.json + predictions.csv) found", root)
        return None
    rows = summarise(cells)
    md, _ = write_table(rows, root)
    figures = write_figures(cells, rows, root / "figures")
    if wandb_project:
        from bone_age.tracking import log_table1

        log_table1(_public(rows), figures, root, wandb_project)
    return md


class ReportCallback(Callback):
    """Hydra callback: writes Table 1 and its figures into the sweep folder when a multirun
    ends, and logs them to W&B when the sweep used ``logger=wandb``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        project = OmegaConf.select(config, "logger.wandb.project", default=None)
        md = report(config.hydra.sweep.dir, project)
        if md is not None:
            print(f"\nTable 1 ({md}):\n{md.read_text()}")


@command("report")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bone_age.report", description=__doc__)
    parser.add_argument("dir", type=Path, help="a sweep (or any) folder holding finished runs")
    parser.add_argument("--wandb", metavar="PROJECT",
                        help="also log Table 1 and the figures to this W&B project")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        return fail("report", f"{args.dir}: not a folder")
    md = report(args.dir, args.wandb)
    if md is None:
        print(f"bone-age report: no finished runs below {args.dir}", file=sys.stderr)
        return EXIT_PARTIAL
    print(md.read_text())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
