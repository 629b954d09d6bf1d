"""``python -m bone_age.bench.gpu --out DIR [--dry-run] [--budget S]``: the GPU check.

Stages, in order of value (a time-out still leaves every figure measured before it):
env (GPU, bf16 matmul peak, bf16 decoding), a (``pytest -m gpu``), b (throughput and MFU),
cohort (paper-size phantom and cache), c (input pipeline), d (paper-scale run for a fixed
budget), e (Table 1 projection), b' (torch.compile), f (two sweep points on one GPU).
``DIR/results.json`` (the bench schema), ``DIR/results.md`` and ``DIR/log.txt`` are rewritten
after every figure. A stage that fails is recorded with its error and the next one runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bone_age.bench.common import entry, write_results
from bone_age.bench.gpu import paper_scale as P
from bone_age.bench.gpu import throughput as T
from bone_age.bench.gpu.sizes import TABLE1_MODELS, Sizes, sizes_for

ROOT = Path(__file__).resolve().parents[3]
# Targets of the issue "Table 1 on a GPU, verified".
MFU_TARGET, WAIT_TARGET, TABLE1_HOURS_TARGET, DECODE_TOL = 0.35, 0.05, 2.0, 1e-3
PROJECTION_EPOCHS = (100, 50)  # trainer.max_epochs of a run; and a run stopped half-way


@dataclass
class Check:
    """One GPU check in progress: its sizes, folders, deadline and what it found so far."""

    sizes: Sizes
    out: Path
    workdir: Path
    deadline: float
    results: list[dict[str, Any]] = field(default_factory=list)
    found: dict[str, Any] = field(default_factory=dict)
    stages: frozenset[str] = frozenset()   # keys of the stages this check runs
    reused: list[dict[str, Any]] = field(default_factory=list)  # an earlier run's results.json

    @property
    def left(self) -> float:
        return self.deadline - time.monotonic()

    def log(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with (self.out / "log.txt").open("a") as f:
            f.write(f"{stamp} {line}\n")
        print(f"[gpu-check] {line}", file=sys.stderr, flush=True)

    def add(self, *entries: dict[str, Any]) -> None:
        """Record figures and rewrite the result files at once (a time-out keeps them)."""
        for e in entries:
            e["dry_run"] = self.sizes.dry_run
            self.results.append(e)
            self.log(f"{e['name']}: {e['value']} {e['unit']}"
                     + (f" (target {e['compare']} {e['target']}: met {e['met']})"
                        if e["target"] is not None else ""))
        write_results(self.results, self.out, _notes(self))


def _notes(check: Check) -> str:
    kind = "DRY RUN on the CPU at tiny sizes: schema only, no figure is a GPU figure.\n" \
        if check.sizes.dry_run else ""
    return kind + "Written by `python -m bone_age.bench.gpu` (make gpu-check).\n"


# -- stages ------------------------------------------------------------------------------------

def stage_env(check: Check) -> None:
    s = check.sizes
    peak = T.matmul_peak(s.device, s.matmul_n)
    check.found["peak"] = peak
    check.add(entry("env bf16 matmul rate (the MFU denominator)", peak / 1e12, "TFLOP/s",
                    note=f"{s.matmul_n}^3 bf16 matrix product, mean of 10 after 3 warm-ups"))
    # Eq. 5 under bf16 autocast on this device against float32, on the same logits.
    from bone_age.losses import LOSSES

    worst = 0.0
    for name in ("mse", "mv"):
        loss = LOSSES[name]()
        logits = torch.randn(4096, loss.num_outputs, device=s.device) * 3
        ref, _ = loss.predict(logits)
        with torch.autocast(s.device, dtype=torch.bfloat16):
            got, _ = loss.predict(logits)
        worst = max(worst, float((got - ref).abs().max()))
    check.add(entry("env bf16-autocast decoded age vs float32, same logits: max difference",
                    worst, "years", DECODE_TOL, "<=", note="4096 random logit rows, mse and mv"))


def stage_smoke(check: Check) -> None:
    xml = check.workdir / "smoke.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "tests/bench/test_gpu.py", "-q",
           "-p", "no:cacheprovider", f"--junitxml={xml}"]
    check.log("$ " + " ".join(cmd))
    timeout = max(30.0, min(240.0, check.left - 60))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    with (check.out / "log.txt").open("a") as f:
        f.write(proc.stdout[-20000:] + proc.stderr[-5000:])
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in counts}
    # pytest's exit status counts only where the report does not (a crash before any test)
    bad = counts["failures"] + counts["errors"] or int(proc.returncode not in (0, 5))
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    note = (f"pytest -m gpu: {passed} passed, {counts['failures']} failed, {counts['errors']} "
            f"errors, {counts['skipped']} skipped in {time.perf_counter() - t0:.0f} s "
            f"(exit {proc.returncode})")
    check.add(entry("a GPU smoke tests passed", passed, "tests", note=note),
              entry("a GPU smoke tests failed or errored", bad, "tests", 0, "<=", note=note))


def stage_throughput(check: Check) -> None:
    torch.backends.cudnn.benchmark = True  # as trainer=gpu sets it: fixed input sizes
    rows = []
    for model in TABLE1_MODELS:
        for mode in check.sizes.modes:
            if check.left < 20:
                check.log(f"b {model} {mode}: skipped, time budget spent")
                continue
            rows.append(T.measure(model, mode, check.sizes))
            _throughput_entries(check, T.with_mfu(rows, check.found["peak"])[-1])
    check.found["throughput"] = rows


def _throughput_entries(check: Check, r: dict[str, Any]) -> None:
    s = check.sizes
    what = (f"{r['model']} + mv, {r['mode']}, {s.image_size[0]}x{s.image_size[1]}, batch "
            f"{r['batch']}, {s.timed_steps} steps after {s.warmup_steps} warm-ups; "
            f"{r['images_per_s']:.0f} images/s ({r['views']} per sample); first step "
            f"{r['first_step_s']:.1f} s")
    target = r["model"] == "multi_vgg16" and r["mode"] == "bf16+cl"
    check.add(
        entry(f"b {r['model']} {r['mode']}: training samples/s", r["samples_per_s"],
              "samples/s", note=what, images_per_s=r["images_per_s"], step_s=r["step_s"]),
        entry(f"b {r['model']} {r['mode']}: MFU", None if r["mfu"] is None else 100 * r["mfu"],
              "%", 100 * MFU_TARGET if target else None, ">=" if target else None,
              note=f"model FLOPs {r['flops']:.3g} per step (forward + backward, "
                   "torch.utils.flop_counter) over the measured bf16 matmul rate"))


def stage_cohort(check: Check) -> None:
    cfg = P.run_config(check.sizes, check.workdir, check.workdir / "pipeline")
    dm, t = P.build_cohort(cfg)
    check.found["cohort"] = (cfg, dm)
    check.add(entry(f"cohort phantom of {t['subjects']} subjects generated", t["phantom_s"], "s",
                    note="python -m bone_age.phantom on all cores"),
              entry("cohort cache built (both views, training size)", t["cache_s"], "s"))


def stage_pipeline(check: Check) -> None:
    cfg, dm = check.found["cohort"]
    r = P.input_pipeline(cfg, dm, check.sizes)
    check.add(entry("c multi_vgg16 input pipeline: GPU waits for data", 100 * r["wait_fraction"],
                    "% of step", 100 * WAIT_TARGET, "<=",
                    note=f"step {r['step_s_full'] * 1e3:.1f} ms from the DataModule "
                         f"({r['workers']} workers, pinned, on-device augmentation) vs "
                         f"{r['step_s_compute'] * 1e3:.1f} ms from prepared on-device batches; "
                         f"batch {r['batch']}, Lightning, trainer=gpu settings",
                    samples_per_s=r["samples_per_s_full"]))


def stage_paper_run(check: Check) -> None:
    budget = check.sizes.train_seconds
    if not check.sizes.dry_run:  # leave time for compile and packing where they run after
        reserve = 110 if check.stages & {"compile", "f"} else 15
        budget = max(30.0, min(budget, check.left - reserve))
    r = P.paper_run(check.sizes, check.workdir, budget)
    check.found["paper"] = r
    what = (f"multi_vgg16 + mv, fold 0, {r['n_train']} training / {r['n_val']} validation "
            f"subjects, {r['precision']}, trainer=gpu defaults, {budget:.0f} s training budget: "
            f"{r['epochs']} epochs, first epoch {r['first_epoch_s'] or 0:.1f} s, whole run "
            f"(with test, calibration and figures) {r['wall_s']:.0f} s")
    check.add(entry("d paper-scale epoch (train + validation), median", r["epoch_s"], "s",
                    note=what),
              entry("d GPU memory peak", r["gpu_peak_gib"], "GiB", note=what),
              entry("d best validation MAE reached", r["best_val_mae"], "years",
                    note=what + f"; test MAE {r['test_mae'] or float('nan'):.2f} y"))


def stage_projection(check: Check) -> None:
    rows = check.found.get("throughput", [])
    rate = {r["model"]: r["samples_per_s"] for r in rows if r["mode"] == "bf16+cl"}
    source = "b"
    if not rate and check.reused:  # stage b not run now: an earlier run's figures (--reuse)
        rate = _reused_rates(check.reused)
        source = "b of the earlier run given by --reuse"
    epoch_s = check.found.get("paper", {}).get("epoch_s")
    if epoch_s is None or set(rate) != set(TABLE1_MODELS):
        raise RuntimeError("needs stage b (all four models at bf16+cl; or --reuse) and stage d")
    for epochs in PROJECTION_EPOCHS:
        p = P.projection(epoch_s, rate, epochs)
        per = ", ".join(f"{m} {s:.1f} s" for m, s in p["epoch_s"].items())
        check.add(entry(f"e PROJECTION: Table 1, {p['runs']} runs, {epochs} epochs each, one GPU",
                        p["hours"], "hours", TABLE1_HOURS_TARGET if epochs == 100 else None,
                        "<=" if epochs == 100 else None,
                        note=f"a projection, not a run: epoch times {per} (multi_vgg16 measured "
                             f"in d, the others scaled by their bf16+cl samples/s in {source}); "
                             "runs one after another"))


def _reused_rates(results: list[dict[str, Any]]) -> dict[str, float]:
    """bf16+cl training samples/s per model from an earlier GPU check's results.json."""
    rates = {}
    for model in TABLE1_MODELS:
        name = f"b {model} bf16+cl: training samples/s"
        hit = [r["value"] for r in results if r["name"] == name and r["value"] is not None]
        if hit:
            rates[model] = float(hit[-1])
    return rates


def stage_compile(check: Check) -> None:
    r = T.measure("multi_vgg16", "bf16+cl+compile", check.sizes)
    rows = check.found.get("throughput", [])
    _throughput_entries(check, T.with_mfu([*rows, r], check.found["peak"])[-1])


def stage_packing(check: Check) -> None:
    solo = _packed(check, 1)
    pair = _packed(check, 2)
    check.add(entry("f resnet50 bf16+cl: 1 process", solo, "samples/s"),
              entry("f resnet50 bf16+cl: 2 processes on one GPU, together", pair, "samples/s",
                    note=f"{pair / solo:.2f}x one process; two sweep points sharing the GPU "
                         "(e.g. hydra/launcher=ray_local with ray.remote.num_gpus=0.5)"))


def _packed(check: Check, n: int) -> float:
    folder = Path(tempfile.mkdtemp(dir=check.workdir, prefix=f"pack{n}_"))
    cmd = [sys.executable, "-m", "bone_age.bench.gpu.throughput", "--worker", "resnet50",
           "--dir", str(folder)] + (["--dry-run"] if check.sizes.dry_run else [])
    procs = [subprocess.Popen([*cmd, "--name", f"w{i}"], cwd=ROOT) for i in range(n)]
    try:
        limit = time.monotonic() + 120
        while not all((folder / f"w{i}.ready").exists() for i in range(n)):
            if time.monotonic() > limit or any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a packing worker did not get ready")
            time.sleep(0.1)
        start = time.time() + 0.5
        (folder / "go.json").write_text(json.dumps(
            {"start": start, "end": start + check.sizes.pack_seconds}))
        for p in procs:
            p.wait(timeout=check.sizes.pack_seconds + 60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    done = [json.loads((folder / f"w{i}.json").read_text()) for i in range(n)]
    if any(d["late"] for d in done):
        check.log(f"packing x{n}: a worker started its window late")
    return sum(d["samples"] / d["seconds"] for d in done)


# (key for --stages, name, stage, seconds it needs at least to be worth starting, stages it
# needs).
STAGES: list[tuple[str, str, Callable[[Check], None], float, tuple[str, ...]]] = [
    ("env", "env", stage_env, 0, ()),
    ("a", "a smoke tests", stage_smoke, 40, ()),
    ("b", "b throughput", stage_throughput, 30, ("env",)),
    ("cohort", "cohort", stage_cohort, 40, ()),
    ("c", "c input pipeline", stage_pipeline, 30, ("cohort",)),
    ("d", "d paper-scale run", stage_paper_run, 60, ()),
    ("e", "e projection", stage_projection, 0, ("b", "d")),
    ("compile", "b compile", stage_compile, 45, ("env",)),
    ("f", "f packing", stage_packing, 40, ()),
]
STAGE_KEYS = tuple(s[0] for s in STAGES)


def run(check: Check) -> None:
    # An earlier run's figures (--reuse) stand in for stage b's.
    done: set[str] = {"b"} if check.reused else set()
    for key, name, stage, needs_s, after in STAGES:
        if key not in check.stages:
            continue
        left = check.left if not check.sizes.dry_run else float("inf")
        if left < needs_s or not set(after) <= done:
            why = "time budget spent" if left < needs_s else f"needs stage {', '.join(after)}"
            check.add(entry(f"{name} (skipped)", None, "-", note=why))
            continue
        t0 = time.perf_counter()
        check.log(f"stage {name} ({left:.0f} s left)")
        try:
            stage(check)
            done.add(key)
        except Exception as err:  # one broken stage must not lose the others' figures
            with (check.out / "log.txt").open("a") as f:
                traceback.print_exc(file=f)
            check.add(entry(f"{name} (failed)", None, "-",
                            note=f"{type(err).__name__}: {str(err)[:300]}"))
        check.log(f"stage {name} took {time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bone_age.bench.gpu", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="folder of results.json/md, log.txt")
    p.add_argument("--dry-run", action="store_true", help="every stage on the CPU, tiny sizes")
    p.add_argument("--budget", type=float, default=330.0,
                   help="seconds for all stages; later stages are skipped past it")
    p.add_argument("--stages", default=",".join(STAGE_KEYS),
                   help=f"comma-separated stages to run, of {','.join(STAGE_KEYS)} (default all)")
    p.add_argument("--reuse", type=Path, default=None,
                   help="results.json of an earlier GPU check on the same GPU kind: stage e "
                        "takes its stage-b figures when b does not run now")
    args = p.parse_args(argv)
    stages = frozenset(k.strip() for k in args.stages.split(",") if k.strip())
    try:
        if not stages or stages - set(STAGE_KEYS):
            raise ValueError(f"--stages: unknown {sorted(stages - set(STAGE_KEYS))}; "
                             f"choose from {','.join(STAGE_KEYS)}")
        reused = json.loads(args.reuse.read_text()) if args.reuse else []
        sizes = sizes_for(args.dry_run)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"bone-age gpu-check: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "log.txt").write_text("")
    with tempfile.TemporaryDirectory(prefix="bone_age_gpu_") as tmp:
        check = Check(sizes, args.out, Path(tmp), time.monotonic() + args.budget,
                      stages=stages, reused=reused)
        check.log(f"GPU check, {'dry run' if sizes.dry_run else 'GPU'}, budget {args.budget} s, "
                  f"stages {','.join(k for k in STAGE_KEYS if k in stages)}"
                  + (f", stage-b figures reused from {args.reuse}" if reused else ""))
        run(check)
    failed = [r["name"] for r in check.results if r["name"].endswith("(failed)")]
    print((args.out / "results.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
