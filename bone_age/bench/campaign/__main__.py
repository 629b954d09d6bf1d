"""The Table 1 campaign: Table 1 at paper scale, filled up over short GPU visits.

  python -m bone_age.bench.campaign next                  the runs still to do, in order
  python -m bone_age.bench.campaign visit --out DIR        on the GPU machine: one visit
  python -m bone_age.bench.campaign merge ARCHIVE...       here: merge, rewrite table1.md
  python -m bone_age.bench.campaign table                  rewrite table1.md

``experiments/table1/visit.sh`` wraps ``visit`` for a bare GPU machine (wheels, then the visit);
``--dry-run`` does every step on this CPU at tiny settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bone_age.bench.campaign.estimate import read_gpu_rates
from bone_age.bench.campaign.plan import (
    SHARE_COST,
    estimates,
    next_runs,
    read_visits,
    run_records,
)
from bone_age.evaluation.pooling import MODEL_ORDER
from bone_age.utils.arguments import ArgumentParser, count, non_negative_float
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL, command

CAMPAIGN = Path(__file__).resolve().parents[3] / "experiments" / "table1"
GPU_RESULTS = CAMPAIGN.parent / "gpu" / "results.json"  # the GPU check's rates (estimate.py)
MAX_BUDGET_S = 7 * 24 * 3600.0  # a visit is minutes; a week is a typo (or an endless visit)
MAX_RUNS = 60  # the campaign's runs
MAX_JOBS = 4  # runs at once on the one GPU (visit.MAX_JOBS; visit.py imports torch, so not here)


def budget(text: str) -> float:
    """--budget: seconds, more than 0 and at most a week (NaN and infinities refused)."""
    value = non_negative_float(text)
    if not 0 < value <= MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_BUDGET_S:.0f} "
                                         f"seconds, got {text}")
    return value


def started(text: str) -> float:
    """--started: a time (seconds since the epoch) not later than now."""
    value = non_negative_float(text)
    if value > time.time() + 5:  # a second's rounding of `date +%s` aside
        raise argparse.ArgumentTypeError(f"must not be later than now ({time.time():.0f}), "
                                         f"got {text}")
    return value


def share_cost(text: str) -> float:
    """--share-cost: a number from 0 to 1."""
    value = non_negative_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {text}")
    return value


def models(text: str) -> frozenset[str]:
    """--compile: campaign models, comma-separated (empty: none)."""
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(MODEL_ORDER))
    if unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown)} not among the campaign's "
                                         f"models ({', '.join(MODEL_ORDER)})")
    return names


def _parser() -> argparse.ArgumentParser:
    # The project's parser: a bad command line is one line, exit 2 (subparsers inherit it).
    common = ArgumentParser(add_help=False)
    common.add_argument("--campaign", type=Path, default=CAMPAIGN,
                        help="the campaign folder (default: experiments/table1)")
    common.add_argument("--gpu-results", type=Path, default=GPU_RESULTS,
                        help="the GPU check's results.json, whose rates estimate the runs not "
                             "yet recorded (default: experiments/gpu/results.json)")
    p = ArgumentParser(prog="python -m bone_age.bench.campaign", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("next", parents=[common],
                   help="the unfinished runs in order, with their expected times")
    v = sub.add_parser("visit", parents=[common],
                       help="one GPU visit: phantom, next runs, archive")
    v.add_argument("--out", type=Path, required=True, help="folder for the archive and work")
    v.add_argument("--budget", type=budget, default=540.0,
                   help="seconds the visit may take from --started (default 540)")
    v.add_argument("--started", type=started, default=None,
                   help="when the visit began (seconds since the epoch; default now)")
    v.add_argument("--max-runs", type=count(MAX_RUNS), default=None,
                   help=f"start at most this many runs (1..{MAX_RUNS})")
    v.add_argument("--jobs", type=count(MAX_JOBS), default=1,
                   help=f"run up to this many runs at once on the GPU (1..{MAX_JOBS}; only "
                        "launch-bound models share it: resnet50, inception; default 1)")
    v.add_argument("--share-cost", type=share_cost, default=SHARE_COST,
                   help="each further run sharing the GPU adds this share of a run's expected "
                        f"time, for the budget (0..1; default {SHARE_COST:g}: serialised)")
    v.add_argument("--compile", type=models, default=frozenset(), metavar="MODELS",
                   help="comma-separated models whose runs get speed.compile=true "
                        "(e.g. vgg16,multi_vgg16)")
    v.add_argument("--dry-run", action="store_true",
                   help="tiny settings on the CPU: every step, numbers meaningless")
    m = sub.add_parser("merge", parents=[common], help="merge visit archives, rewrite table1.md")
    m.add_argument("archives", type=Path, nargs="+")
    sub.add_parser("table", parents=[common], help="rewrite table1.md from the campaign folder")
    return p


@command("campaign")
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    campaign: Path = args.campaign
    if args.action == "next":
        records = run_records(read_visits(campaign / "visits.json"))
        rates = read_gpu_rates(args.gpu_results)
        todo = next_runs(campaign / "runs")
        for run in todo:
            (seconds, basis), *others = estimates(run, records, rates)
            # The one a visit uses, then any other (the GPU check's, once records replace it).
            print(f"{run.name:28s} ~{seconds:4.0f} s  ({basis})"
                  + "".join(f"\n{'':28s} [{s:4.0f} s  {b}]" for s, b in others))
        print(f"{60 - len(todo)} of 60 runs done")
    elif args.action == "visit":
        from bone_age.bench.campaign.visit import visit

        archive = visit(args.out, campaign, args.budget,
                        time.time() if args.started is None else args.started,
                        args.dry_run, args.max_runs, args.gpu_results, args.jobs,
                        args.share_cost, args.compile)
        print(f"visit archive: {archive}")
    else:
        from bone_age.bench.campaign.merge import merge_all
        from bone_age.bench.campaign.table import write_table

        if args.action == "merge":  # every archive checked before anything is written
            for archive, got in zip(args.archives, merge_all(args.archives, campaign),
                                    strict=True):
                print(f"{archive}: visit {got['visit']}, {len(got['added'])} run(s) added"
                      + (f", {len(got['kept'])} already in (kept)" if got["kept"] else ""))
        left_out: list[str] = []
        print(f"Table 1: {write_table(campaign, left_out)}")
        if left_out:  # the table holds the other runs; the warnings above name these
            print(f"bone-age campaign: {len(left_out)} damaged run(s) left out of the table: "
                  f"{', '.join(left_out)}", file=sys.stderr)
            return EXIT_PARTIAL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
