"""Check that two checkouts of the phantom write byte-identical cohorts (not collected by pytest).

Speed work on the phantom must not change a byte: this generates the same cohorts with a
reference checkout (e.g. main) and with this one and compares the sha256 of every file written
(DICOM files, manifest.csv, truth.csv, phantom_info.json). Usage, from this checkout's root:

    python tests/phantom/compare_cohorts.py /work/main [--subjects 60] [--work DIR]

The reference checkout is run with its own code (the command runs in its root). Exit status 0
when every cohort is identical, 1 otherwise (the differing files are listed).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CASES = {
    "default": [],
    "single-frame": ["--layout", "single-frame"],
    "sites3": ["--sites", "3"],
    "rle": ["--transfer-syntax", "rle"],
    "sites3-single-rle": ["--sites", "3", "--layout", "single-frame", "--transfer-syntax", "rle"],
}


def digests(root: Path) -> dict[str, str]:
    """sha256 of every file under root, by relative path."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip


def generate(checkout: Path, out: Path, subjects: int, seed: int, extra: list[str]) -> None:
    cmd = [sys.executable, "-m", "bone_age.phantom", "--out", str(out), "--subjects",
           str(subjects), "--seed", str(seed), "--no-progress", *extra]  # fmt: skip
    subprocess.run(cmd, cwd=checkout, check=True, env={**os.environ, "PYTHONPATH": str(checkout)},
                   capture_output=True)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="root of the reference checkout")
    p.add_argument("--subjects", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=None, help="where to write (default: a temp dir)")
    p.add_argument("--reuse-reference", action="store_true",
                   help="keep reference cohorts already in --work (they are the slow half)")
    args = p.parse_args()
    here = Path(__file__).resolve().parents[2]
    work = args.work or Path(tempfile.mkdtemp(prefix="phantom-compare-"))
    failed = 0
    for name, extra in CASES.items():
        d = {}
        for tag, checkout in (("ref", args.reference.resolve()), ("new", here)):
            out = work / f"{name}-{tag}"
            if tag == "new" or not (args.reuse_reference and (out / "phantom_info.json").exists()):
                shutil.rmtree(out, ignore_errors=True)
                generate(checkout, out, args.subjects, args.seed, extra)
            d[tag] = digests(out)
        bad = sorted(k for k in d["ref"].keys() | d["new"].keys()
                     if d["ref"].get(k) != d["new"].get(k))  # fmt: skip
        print(f"{name}: {len(d['ref'])} files, " + ("identical" if not bad else
              f"{len(bad)} differ, e.g. {bad[:5]}"))  # fmt: skip
        failed += bool(bad)
    return int(failed > 0)


if __name__ == "__main__":
    sys.exit(main())
