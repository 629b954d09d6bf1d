"""CLI: python -m bone_age.phantom --out DIR --subjects N --seed S [options]."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bone_age.utils.arguments import (
    MAX_PHANTOM_SUBJECTS,
    MAX_SITES,
    MAX_WORKERS,
    ArgumentParser,
    count,
    non_negative_float,
)
from bone_age.utils.console import plural
from bone_age.utils.errors import command, fail

from .cohort import DEFAULTS, LAYOUTS, generate_cohort, keep_freed_memory
from .dicom_writer import TRANSFER_SYNTAXES


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m bone_age.phantom",
        description="Write a synthetic cohort of whole-body bone scans (DICOM NM) + manifest.",
    )
    p.add_argument("--out", type=Path, help="output directory (created)")
    p.add_argument("--subjects", type=count(MAX_PHANTOM_SUBJECTS), default=100,
                   help=f"number of studies (1..{MAX_PHANTOM_SUBJECTS:,})")
    p.add_argument("--seed", type=int, default=0, help="cohort seed")
    p.add_argument("--sigma", type=non_negative_float, default=DEFAULTS["sigma"],
                   help="SD of latent bone age around chronological age, years (default 3)")
    p.add_argument("--variability", type=non_negative_float, default=DEFAULTS["variability"],
                   help="scale of the age-independent biological noise of every effect")
    p.add_argument("--layout", choices=LAYOUTS, default=DEFAULTS["layout"])
    p.add_argument("--transfer-syntax", choices=sorted(TRANSFER_SYNTAXES),
                   default=DEFAULTS["transfer_syntax"], help="explicit VR LE or RLE Lossless")
    p.add_argument("--sites", type=count(MAX_SITES), default=1,
                   help="number of sites, each with its own camera and population (default 1)")
    p.add_argument("--workers", type=count(MAX_WORKERS), default=None,
                   help="worker processes (default: the cores this process may use; the "
                        "output does not depend on it)")
    p.add_argument("--preview", type=Path, default=None,
                   help="also write a PNG of a few subjects of different ages (ANT + POST); a "
                        "bare file name goes into --out, beside the cohort")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p  # fmt: skip


@command("phantom")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and args.preview is None:
        parser.error("give --out DIR (and/or --preview PNG)")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} exists and is not a directory")
    if args.preview is not None and args.preview.is_dir():
        parser.error(f"--preview {args.preview} is a directory, expected a PNG path")
    try:
        if args.out is not None:
            keep_freed_memory()  # this process is the phantom's own (--workers 1 renders here)
            t0 = time.perf_counter()
            manifest = generate_cohort(
                args.out, args.subjects, args.seed, workers=args.workers,
                progress=not args.no_progress, sigma=args.sigma, variability=args.variability,
                layout=args.layout, transfer_syntax=args.transfer_syntax, sites=args.sites,
            )  # fmt: skip
            dt = time.perf_counter() - t0
            print(f"wrote {plural(args.subjects, 'study')} to {manifest.parent} in {dt:.1f} s",
                  file=sys.stderr)  # fmt: skip
        if args.preview is not None:
            from .preview import render_preview

            # A bare name lands beside the cohort, not wherever the command was started (in a
            # checkout: an untracked file in the repository's root).
            preview = args.out / args.preview if args.out is not None and \
                args.preview.parent == Path() else args.preview
            render_preview(preview, args.seed, args.sigma, args.variability)
            print(f"wrote preview {preview}", file=sys.stderr)
    except ValueError as exc:  # the cohort's settings, checked where they are used
        return fail("phantom", str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
