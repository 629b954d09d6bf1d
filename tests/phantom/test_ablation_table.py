"""experiments/ablation/table.py: a sweep's table, the repeat's MAE column, the repeat's table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "experiments" / "ablation" / "table.py"


def _sweep(root: Path, maes: dict[str, float], seed: int) -> Path:
    for k, (cell, mae) in enumerate(maes.items()):
        run = root / f"{k}_run"
        run.mkdir(parents=True)
        run.joinpath("metrics.json").write_text(json.dumps({
            "cell": cell, "model": "multi_vgg16", "loss": "mse", "mae": mae, "pearson_r": 0.5,
            "n_train": 6, "n_val": 2, "n_test": 2, "n_excluded": 0, "seed": seed,
            "baseline_mae": 7.0 + seed, "train_seconds": 3.0}))  # fmt: skip
    return root


def test_repeat_column_and_the_repeats_own_table(tmp_path: Path) -> None:
    first = _sweep(tmp_path / "a", {"ablation": 4.25, "ablation_mse": 3.5}, 42)
    repeat = _sweep(tmp_path / "b", {"ablation": 5.125, "ablation_mse": 6.75}, 1)
    data = tmp_path / "data"
    for seed, oracle in ((42, 3.0), (1, 3.75)):
        info = data / f"n10_seed{seed}" / "phantom_info.json"
        info.parent.mkdir(parents=True)
        info.write_text(json.dumps({"bayes_mae_floor": 2.0, "oracle_mae": oracle}))
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, str(TABLE), str(first), "--repeat", str(repeat), "--repeat-md",
           str(out / "seed1.md"), "--out", str(out), "--data-dir", str(data)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    main = (out / "results.md").read_text().splitlines()
    assert "| MAE | MAE (repeat) |" in main[0]
    assert "| mse | 4.25 | 5.12 |" in main[2] and "| mse | 3.50 | 6.75 |" in main[3]
    assert "oracle MAE 3.00 y, baseline (training mean) MAE 49.00 y" in main[-1]
    own = (out / "seed1.md").read_text().splitlines()
    assert "MAE (repeat)" not in own[0]
    assert "| mse | 5.12 |" in own[2] and "| mse | 6.75 |" in own[3]
    assert "oracle MAE 3.75 y, baseline (training mean) MAE 8.00 y" in own[-1]


def test_repeat_md_needs_repeat(tmp_path: Path) -> None:
    cmd = [sys.executable, str(TABLE), str(tmp_path), "--repeat-md", str(tmp_path / "x.md")]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--repeat-md needs --repeat" in res.stderr
