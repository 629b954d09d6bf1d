"""Item 6: peak resident memory of training at the paper's cohort size and at 10x that size.

Generating 44,740 real DICOM studies would take hours and 44 GB, so the cohort is built
directly in the form training reads it: a manifest of tiny distinct dummy files (so every study
gets its own cache key, computed by bone-age's own ``StudyCache.key``) and, at each key's cache
path, a hard link to one real preprocessed (2, 224, 224) float32 ``.npy`` entry. The training
run itself (DataModule.setup, the DataLoader reading ``.npy`` files, augmentation, Lightning fit)
is the real code path, in a fresh subprocess whose peak RSS comes from ``os.wait4``.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from bone_age.bench.common import Ctx, entry, paired_ratio
from bone_age.data.cache import StudyCache
from bone_age.data.manifest import read_manifest
from bone_age.data.preprocess import Preprocess

VIEWS = ("anterior", "posterior")


def build_cohort(root: Path, subjects: int, size: tuple[int, int]) -> Path:
    """Manifest + filled cache of ``subjects`` synthetic studies under ``root``."""
    files = root / "files"
    files.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(subjects)
    manifest = root / "manifest.csv"
    with manifest.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject_id", "age", "sex", "anterior", "posterior"])
        for i in range(subjects):
            name = f"files/S{i:06d}.dcm"
            (root / name).write_bytes(f"dummy study {i}".encode())
            w.writerow([f"S{i:06d}", int(rng.integers(40, 81)), "FM"[i % 2], name, name])
    cache = StudyCache(root / "cache", Preprocess(size), VIEWS)
    source = root / "entry.npy"
    counts = rng.poisson(20.0, size=(2, *size)).astype(np.float32)
    np.save(source, counts)
    studies, _ = read_manifest(manifest)
    for study in studies:
        target = cache.entry(cache.key(study))
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source, target)
    return manifest


def measure(manifest: Path, size: tuple[int, int], steps: int, backbone: str,
            batch: int) -> dict:
    """Run the training child; its peak RSS (MB) from os.wait4 and what it reports."""
    cmd = [sys.executable, "-m", "bone_age.bench.memory_child", str(manifest),
           str(manifest.parent / "cache"), str(size[0]), str(size[1]), str(steps), backbone,
           str(batch)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"memory child failed ({proc.returncode}): {' '.join(cmd)}")
    report = json.loads(out.strip().splitlines()[-1])
    report["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return report


def run(ctx: Ctx) -> list[dict]:
    size = (32, 16) if ctx.quick else (224, 224)
    small = ctx.memory_subjects
    large = 10 * small
    steps = ctx.memory_steps
    backbone, batch = ("test_resnet", 4) if ctx.quick else ("test_resnet", 16)
    manifests = {n: build_cohort(ctx.workdir / f"mem_{n}", n, size) for n in (small, large)}
    runs: dict[int, list[dict]] = {small: [], large: []}
    repeats = 1 if ctx.quick else 2
    for r in range(repeats):
        for n in (small, large) if r % 2 == 0 else (large, small):
            runs[n].append(measure(manifests[n], size, steps, backbone, batch))
    rss = {n: [x["peak_rss_mb"] for x in runs[n]] for n in runs}
    ratio, spread = paired_ratio(rss[large], rss[small])
    med = {n: float(np.median(rss[n])) for n in rss}
    per_1000 = (med[large] - med[small]) / ((large - small) / 1000)
    how = (f"fresh subprocess per run: BoneAgeDataModule(manifest) + Lightning fit, {steps} "
           f"training steps, batch {batch}, {size[0]}x{size[1]} dual view, augmentation on, "
           f"num_workers=0, backbone {backbone} (memory of the model is the same for both "
           "sizes); peak RSS from os.wait4; cohort built synthetically (see results.md)")
    return [
        entry(f"6 peak RSS, training on {small} subjects", med[small], "MB", spread=(
            min(rss[small]), max(rss[small])), repeats=repeats, note=how),
        entry(f"6 peak RSS, training on {large} subjects", med[large], "MB", spread=(
            min(rss[large]), max(rss[large])), repeats=repeats,
              note=f"{per_1000:.2f} MB more per 1000 subjects"),
        entry(f"6 peak RSS ratio {large} / {small} subjects", ratio, "ratio", 1.1, "<=",
              spread=spread, repeats=repeats,
              note="target: memory does not grow with cohort size (within 10%)",
              mb_per_1000_subjects=per_1000,
              setup_seconds={n: [x["setup_s"] for x in runs[n]] for n in runs}),
    ]
