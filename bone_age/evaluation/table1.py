"""Table 1 from a sweep: ``python -m bone_age.report DIR`` -> DIR/table1.md and DIR/table1.csv.

Every run below DIR that wrote ``metrics.json`` and ``predictions.csv`` is gathered. Each row is
one model and loss, laid out like the paper's Table 1: "MAE (SD)" and Pearson r computed on the
pooled out-of-fold predictions of all its folds, plus the per-fold mean +- SD of MAE and r.
Only runs that share every setting that changes the experiment are pooled (``experiment_settings``:
the run's whole configuration but its fold, file locations, speed, display and hardware layout);
when a folder mixes settings beyond model and loss, the rows are kept apart, labelled with the
settings that differ, and the report says so.
A leave-one-site-out sweep (``data.split=site``) also gets one row per held-out site and the
pooled row, in table1.md and DIR/table1_sites.csv. Figures go to DIR/figures/: the pooled
scatter of each cell and a bar chart of MAE over the grid.
With ``--wandb PROJECT`` (or a sweep run with ``logger=wandb``) Table 1 and the figures are also
logged to W&B as a ``report`` run in the sweep's group.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from bone_age.evaluation.pooling import collect_runs, not_learned, site_rows, summarise, warn_mixed
from bone_age.evaluation.table1_files import (
    NOT_LEARNED_MARK,
    table_columns,
    write_figures,
    write_table,
)
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.console import plural
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL, command, fail

log = logging.getLogger(__name__)


def report(root: str | Path, wandb_project: str | None = None,
           left_out: list[str] | None = None,
           unfinished: list[str] | None = None) -> Path | None:
    """Gather the runs below ``root`` into its Table 1 and figures; returns the markdown file,
    or None where no run below ``root`` finished.

    ``wandb_project``: also log Table 1 and the figures to that W&B project; ``left_out``
    receives the damaged runs, ``unfinished`` the run folders that wrote no results (both named
    in warnings, not pooled).
    """
    root = Path(root)
    cells = collect_runs(root, left_out, unfinished)
    if not cells:  # the caller says so, once
        return None
    mixed = warn_mixed(root, cells)
    rows = summarise(cells)
    unlearned = not_learned(rows)
    if unlearned:  # a table that learned nothing must not look publishable
        log.warning("%s: %d of %d Table 1 cells are not below the baseline (MAE %s vs "
                    "baseline %.2f y; 95%% bootstrap interval of the difference reaches 0): "
                    "they learned nothing measurable; marked %s in table1.md, below_baseline="
                    "False in table1.csv, hatched in the figure", root, len(unlearned),
                    len(rows), ", ".join(f"{r['mae']:.2f}" for r in unlearned[:6])
                    + (", ..." if len(unlearned) > 6 else ""),
                    float(np.mean([r["baseline_mae"] for r in unlearned])), NOT_LEARNED_MARK)
    md, _ = write_table(rows, root, mixed, site_rows(cells, rows))
    figures = write_figures(cells, rows, root / "figures")
    if wandb_project:
        from bone_age.evaluation.tracking import log_table1

        log_table1(table_columns(rows), figures, root, wandb_project)
    return md


class ReportCallback(Callback):
    """Hydra callback: writes Table 1 and its figures into the sweep folder when a multirun
    ends, and logs them to W&B when the sweep used ``logger=wandb``."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        project = OmegaConf.select(config, "logger.wandb.project", default=None)
        md = report(config.hydra.sweep.dir, project)
        if md is None:
            log.warning("%s: no finished runs (metrics.json + predictions.csv): no Table 1",
                        config.hydra.sweep.dir)
        else:
            print(f"\nTable 1 ({md}):\n{md.read_text()}")


@command("report")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m bone_age.report", description=__doc__)
    parser.add_argument("dir", type=Path, help="a sweep (or any) folder holding finished runs")
    parser.add_argument("--wandb", metavar="PROJECT",
                        help="also log Table 1 and the figures to this W&B project")
    args = parser.parse_args(argv)
    if not args.dir.is_dir():
        return fail("report", f"{args.dir}: not a folder")
    left_out: list[str] = []
    unfinished: list[str] = []
    md = report(args.dir, args.wandb, left_out, unfinished)
    if md is None:
        print(f"bone-age report: no finished runs (metrics.json + predictions.csv) below "
              f"{args.dir}", file=sys.stderr)
        return EXIT_PARTIAL
    print(md.read_text())
    # The table holds the other runs; the warnings above name these.
    missing = [plural(len(runs), what) for runs, what in
               ((left_out, "damaged run"), (unfinished, "unfinished run")) if runs]
    if missing:
        print(f"bone-age report: {' and '.join(missing)} left out of the table", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
