"""Shared pieces of the benchmarks: result entries, machine facts, interleaved timing, output."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.benchmark import Timer


def machine() -> dict[str, Any]:
    """Cores, CPU model, torch version and load average of this machine."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gpu = {"name": props.name, "count": torch.cuda.device_count(), "cuda": torch.version.cuda,
               "memory_gib": round(props.total_memory / 2**30, 1),
               "multiprocessors": props.multi_processor_count}
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "loadavg": list(os.getloadavg()),
    }


def entry(
    name: str,
    value: float | None,
    unit: str,
    target: float | None = None,
    compare: str | None = None,
    *,
    spread: tuple[float, float] | None = None,
    repeats: int | None = None,
    note: str = "",
    **extra: Any,
) -> dict[str, Any]:
    """One measured figure. ``compare`` is ">=" or "<=" (how ``value`` must relate to target)."""
    met = None
    if target is not None and value is not None and compare in (">=", "<="):
        met = bool(value >= target) if compare == ">=" else bool(value <= target)
    return {
        "name": name,
        "value": None if value is None else round(float(value), 4),
        "unit": unit,
        "target": target,
        "compare": compare,
        "met": met,
        "spread": None if spread is None else [round(float(s), 4) for s in spread],
        "repeats": repeats,
        "note": note,
        "machine": machine(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


@dataclass
class Ctx:
    """Sizes and shared resources of one suite run."""

    quick: bool = False
    repeats: int = 5
    phantom_subjects: int = 4474
    memory_subjects: int = 4474
    memory_steps: int = 100
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bone_age_bench_")))
    _cohort: Path | None = None

    def cohort(self) -> Path:
        """Manifest of a small phantom cohort shared by the benchmarks (generated once)."""
        if self._cohort is None:
            subjects = 24 if self.quick else 48
            from bone_age.phantom import generate_cohort

            self._cohort = Path(generate_cohort(self.workdir / "cohort", subjects=subjects,
                                                seed=3, progress=False))
        return self._cohort


def time_once(fn: Callable[[], Any], number: int = 1) -> float:
    """Seconds per call of ``fn`` (torch.utils.benchmark.Timer, all of torch's threads)."""
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return timer.timeit(number).mean


def interleave(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1, number: int = 1,
    self_timed: bool = False,
) -> dict[str, list[float]]:
    """Seconds per call of each function, measured A, B, A, B, ... ``repeats`` times.

    ``self_timed``: each function returns the seconds of the part it times itself.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        # alternate the order too, so neither side always runs first after the other
        names = list(fns) if r % 2 == 0 else list(fns)[::-1]
        for name in names:
            fn = fns[name]
            times[name].append(float(fn()) if self_timed else time_once(fn, number))
    return times


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, tuple[float, float]]:
    """Median and (min, max) of the per-repeat ratios num[i] / den[i]."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    return statistics.median(ratios), (min(ratios), max(ratios))


def rate(items: float, seconds: list[float]) -> tuple[float, tuple[float, float]]:
    """Median items/s and its (min, max) over repeats."""
    rates = [items / s for s in seconds]
    return statistics.median(rates), (min(rates), max(rates))


def write_results(results: list[dict[str, Any]], out_dir: Path, notes: str = "") -> None:
    """results.json (the list of entries) and results.md (a table + notes)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "results.md").write_text(markdown(results, notes))


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if abs(x) < 100 else f"{x:,.0f}"


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| figure | value | spread (min-max) | unit | target | met |",
            "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        spread = "-" if r.get("spread") is None else "-".join(_fmt(s) for s in r["spread"])
        target = "-" if r["target"] is None else f"{r['compare']} {_fmt(r['target'])}"
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        rows.append(f"| {r['name']} | {_fmt(r['value'])} | {spread} | {r['unit']} | {target} "
                    f"| {met} |")
    return "\n".join(rows) + "\n"


def markdown(results: list[dict[str, Any]], notes: str = "") -> str:
    m = results[0]["machine"] if results else machine()
    gpu = f", GPU {m['gpu']['name']} (CUDA {m['gpu']['cuda']})" if m.get("gpu") else ""
    head = (f"# bone-age benchmarks\n\nMachine: {m['cores']} cores, {m['cpu']}{gpu}, torch "
            f"{m['torch']}; date {results[0]['date'] if results else ''}.\n\n")
    detail = "\n".join(f"- **{r['name']}**: {r['note']}" for r in results if r.get("note"))
    return head + table(results) + "\n## Notes per figure\n\n" + detail + "\n\n" + notes
