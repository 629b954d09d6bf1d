"""Smoke test of the benchmark suite: every item on tiny sizes, result entries' schema only.

No timing assertions: the figures depend on the machine and its load.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from bone_age.bench import accuracy
from bone_age.bench.__main__ import ITEMS
from bone_age.bench.common import Ctx, markdown, write_results

KEYS = {"name", "value", "unit", "target", "met", "machine", "date"}


def check_entries(results: list[dict]) -> None:
    assert results
    for r in results:
        assert set(r) >= KEYS, r
        assert isinstance(r["name"], str) and r["name"]
        assert r["value"] is None or isinstance(r["value"], float)
        assert r["met"] in (True, False, None)
        if r["target"] is None:
            assert r["met"] is None
        assert {"cores", "cpu", "torch"} <= set(r["machine"])
        json.dumps(r)  # serialisable


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Ctx:
    return Ctx(quick=True, repeats=1, phantom_subjects=4, memory_subjects=40, memory_steps=2,
               workdir=tmp_path_factory.mktemp("bench"))


@pytest.mark.parametrize("item", list(ITEMS))
def test_item_entries(item: str, ctx: Ctx) -> None:
    results = importlib.import_module(ITEMS[item]).run(ctx)
    check_entries(results)
    if item != "options":  # torch.compile is skipped in quick mode (value None)
        assert all(r["value"] is not None for r in results), results


def test_accuracy_reads_run_and_yardsticks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 42\ndata:\n  subjects: 20\n")
    (run / "metrics.json").write_text(json.dumps({
        "mae": 3.5, "n_test": 4, "fold": 0, "baseline_mae": 7.0, "pearson_r": 0.8,
        "train_seconds": 60.0}))
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "phantom_info.json").write_text(json.dumps(
        {"oracle_mae": 3.4, "bayes_mae_floor": 2.2}))
    results = accuracy.run(run, tmp_path / "out", cohort=cohort)
    check_entries(results)
    assert results[0]["met"] is True and abs(results[0]["value"] - 3.5 / 3.4) < 1e-3
    assert (tmp_path / "out" / "metrics.json").exists()
    assert "| figure |" in (tmp_path / "out" / "results.md").read_text()


def test_write_results(tmp_path: Path) -> None:
    from bone_age.bench.common import entry

    results = [entry("x", 1.0, "ratio", 0.5, ">="), entry("y", None, "s")]
    write_results(results, tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())[0]["met"] is True
    assert "**no**" not in markdown(results)


def test_quick_suite_is_small_quiet_and_apart(tmp_path: Path) -> None:
    """--quick: no traceback for its deliberate compile skip, no paper-size phantom, and its
    figures go to outputs/bench-quick, never into the committed experiments/bench."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bone_age.bench", "--quick", "--repeats", "1",
                           "--only", "options", "phantom"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    results = json.loads((tmp_path / "outputs" / "bench-quick" / "results.json").read_text())
    assert not (tmp_path / "experiments").exists()
    names = [r["name"] for r in results]
    assert "5 phantom generation, 40 subjects" in names, names
    compile_entry = next(r for r in results if "torch.compile" in r["name"])
    assert compile_entry["value"] is None and "skipped in --quick" in compile_entry["note"]
