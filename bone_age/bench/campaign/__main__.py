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

from bone_age.bench.campaign.plan import expected_seconds, next_runs, read_visits, run_records
from bone_age.utils.errors import EXIT_OK, command

CAMPAIGN = Path(__file__).resolve().parents[3] / "experiments" / "table1"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--campaign", type=Path, default=CAMPAIGN,
                        help="the campaign folder (default: experiments/table1)")
    p = argparse.ArgumentParser(prog="python -m bone_age.bench.campaign", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("next", parents=[common],
                   help="the unfinished runs in order, with their expected times")
    v = sub.add_parser("visit", parents=[common],
                       help="one GPU visit: phantom, next runs, archive")
    v.add_argument("--out", type=Path, required=True, help="folder for the archive and work")
    v.add_argument("--budget", type=float, default=540.0,
                   help="seconds the visit may take from --started (default 540)")
    v.add_argument("--started", type=float, default=None,
                   help="when the visit began (seconds since the epoch; default now)")
    v.add_argument("--max-runs", type=int, default=None, help="start at most this many runs")
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
        todo = next_runs(campaign / "runs")
        for run in todo:
            seconds, basis = expected_seconds(run, records)
            print(f"{run.name:28s} ~{seconds:4.0f} s  ({basis})")
        print(f"{60 - len(todo)} of 60 runs done")
    elif args.action == "visit":
        from bone_age.bench.campaign.visit import visit

        archive = visit(args.out, campaign, args.budget, args.started or time.time(),
                        args.dry_run, args.max_runs)
        print(f"visit archive: {archive}")
    else:
        from bone_age.bench.campaign.merge import merge
        from bone_age.bench.campaign.table import write_table

        for archive in getattr(args, "archives", []):
            got = merge(archive, campaign)
            print(f"{archive}: visit {got['visit']}, {len(got['added'])} run(s) added"
                  + (f", {len(got['kept'])} already in (kept)" if got["kept"] else ""))
        print(f"Table 1: {write_table(campaign)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
