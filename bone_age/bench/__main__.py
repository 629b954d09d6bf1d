"""``python -m bone_age.bench``: run the benchmark suite, print a table, write the results.

``--accuracy`` instead runs (or reads) the time-to-accuracy recipe (item 8).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

from bone_age.bench.common import Ctx, entry, table, write_results
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.errors import BoneAgeError, command

ITEMS = {
    "overhead": "bone_age.bench.overhead",
    "pipeline": "bone_age.bench.pipeline",
    "dicom": "bone_age.bench.dicom_rate",
    "inference": "bone_age.bench.inference",
    "memory": "bone_age.bench.memory",
    "options": "bone_age.bench.speed_options",
    "phantom": "bone_age.bench.phantom_gen",
}


QUICK_SUBJECTS = 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bone_age.bench", description=__doc__)
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default experiments/bench, the committed figures; "
                        "with --quick outputs/bench-quick)")
    p.add_argument("--only", nargs="+", choices=list(ITEMS), help="run only these items")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats per comparison")
    p.add_argument("--phantom-subjects", type=int, default=4474)
    p.add_argument("--memory-subjects", type=int, default=4474,
                   help="paper-scale cohort of the memory item (it also runs 10x this)")
    p.add_argument("--memory-steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own; 1 on a shared machine)")
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes (a smoke test: small cohorts, no compilation), written "
                        "apart from the committed figures")
    p.add_argument("--render", action="store_true",
                   help="only rebuild results.md from results.json and notes.md in --out")
    p.add_argument("--accuracy", nargs="?", const=Path("experiments/phantom_bench/run"),
                   type=Path, metavar="RUN_DIR",
                   help="item 8: train experiment=phantom_bench into RUN_DIR (unless it holds "
                        "metrics.json already) and compare its MAE with the oracle")
    args = p.parse_args(argv)
    if args.out is None:
        args.out = Path("outputs/bench-quick") if args.quick else Path("experiments/bench")
    if args.quick:  # the paper-size cohorts are what --quick is for avoiding
        args.phantom_subjects = min(args.phantom_subjects, QUICK_SUBJECTS)
        args.memory_subjects = min(args.memory_subjects, QUICK_SUBJECTS)
        args.memory_steps = min(args.memory_steps, 2)
    return args


def _notes(out: Path) -> str:
    """The hand-written analysis in ``out/notes.md``, appended to results.md."""
    notes = out / "notes.md"
    return notes.read_text() if notes.exists() else ""


def run_items(ctx: Ctx, names: list[str]) -> list[dict]:
    results = []
    for name in names:
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            results += importlib.import_module(ITEMS[name]).run(ctx)
        except Exception as err:  # one broken item must not lose the others' figures
            traceback.print_exc()
            results.append(entry(f"{name} (failed)", None, "-",
                                 note=f"{type(err).__name__}: {str(err)[:300]}"))
        print(f"[bench] {name} took {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)
    return results


@command("bench")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.accuracy is not None:
        from bone_age.bench import accuracy

        wall = None
        if not (args.accuracy / "metrics.json").exists():
            wall = accuracy.train(args.accuracy)
        results = accuracy.run(args.accuracy, Path("experiments/phantom_bench"),
                               wall_seconds=wall)
        print(table(results))
        return 0
    if args.render:
        saved = args.out / "results.json"
        try:
            results = json.loads(saved.read_text())
        except ValueError as err:
            raise BoneAgeError(f"{saved}: not valid JSON ({err})") from None
        old = (args.out / "results.md").read_text() if (args.out / "results.md").exists() else ""
        tail = next((line for line in old.splitlines() if line.startswith("Suite wall")), "")
        write_results(results, args.out, _notes(args.out) + (f"\n{tail}\n" if tail else ""))
        print(table(results))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # subprocesses too
    ctx = Ctx(quick=args.quick, repeats=args.repeats, phantom_subjects=args.phantom_subjects,
              memory_subjects=args.memory_subjects, memory_steps=args.memory_steps)
    t0 = time.perf_counter()
    try:
        results = run_items(ctx, args.only or list(ITEMS))
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    notes = _notes(args.out) + (
        f"\nSuite wall time {time.perf_counter() - t0:.0f} s (--threads {args.threads}); 1-min "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.\n")
    write_results(results, args.out, notes)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
