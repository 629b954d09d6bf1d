"""The Table 1 campaign: a dry-run visit (the real script, tiny settings, on the CPU), its merge,
the order and budget of runs, archive checks and the paper's claims on known numbers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bone_age.bench.campaign.__main__ import main
from bone_age.bench.campaign.plan import Run, all_runs, expected_seconds, next_runs
from bone_age.bench.campaign.table import claims
from bone_age.evaluation.report import LOSS_ORDER, MODEL_ORDER, collect_runs
from tests.conftest import read_rows

ROOT = Path(__file__).resolve().parents[2]


def test_order_is_fold_0_of_all_cells_first():
    runs = all_runs()
    assert len(runs) == len({r.name for r in runs}) == 60
    assert [r.fold for r in runs[:12]] == [0] * 12
    assert {(r.model, r.loss) for r in runs[:12]} == {(m, lo) for m in MODEL_ORDER
                                                      for lo in LOSS_ORDER}
    assert [r.fold for r in runs] == sorted(r.fold for r in runs)
    assert all(Run.parse(r.name) == r for r in runs)
    assert Run.parse("vgg16_mv_fold7") is None and Run.parse("../x_mv_fold0") is None


def test_expected_time_comes_from_the_models_slowest_recorded_run():
    run = Run("resnet50", "mv", 1)
    first, basis = expected_seconds(run, {})
    assert "first guess" in basis and first > 0
    records = {"resnet50_mse_fold0": {"wall_s": 100.0}, "resnet50_softmax_fold0":
               {"wall_s": 140.0}, "vgg16_mv_fold0": {"wall_s": 900.0}}
    seconds, basis = expected_seconds(run, records)
    assert seconds == pytest.approx(140.0 * 1.15) and "2 recorded" in basis


@pytest.fixture(scope="module")
def visited(tmp_path_factory) -> tuple[Path, Path]:
    """A dry-run visit through the wrapper script, as on a GPU machine: (campaign, archive)."""
    tmp = tmp_path_factory.mktemp("campaign")
    campaign, out = tmp / "table1", tmp / "out"
    campaign.mkdir()
    # No wheels: a checkout's .whl/ holds the GPU machine's (another Python), not this one's.
    env = {**os.environ, "PYTHON": sys.executable, "GPU_SITE": str(tmp / "site"),
           "WHEELS": str(tmp / "no_wheels")}
    done = subprocess.run([str(ROOT / "experiments" / "table1" / "visit.sh"), str(out),
                           "--campaign", str(campaign), "--dry-run", "--max-runs", "2",
                           "--budget", "900"],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (archive,) = out.glob("table1_visit_*.tar.gz")
    return campaign, archive


def test_a_dry_visit_packs_two_finished_runs(visited):
    _, archive = visited
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
        record = json.loads(tar.extractfile("visit.json").read())
    first = [r.name for r in all_runs()[:2]]
    assert [r["name"] for r in record["runs"]] == first
    assert all(r["finished"] and r["wall_s"] > 0 for r in record["runs"])
    for run in first:
        for file in ("metrics.json", "predictions.csv", "history.csv", "calibration.json",
                     ".hydra/config.yaml", "run.log"):
            assert f"runs/{run}/{file}" in names, (run, file)
    assert not any(n.endswith(".ckpt") for n in names)
    assert record["dry_run"] and record["phantom"]["subjects"] == 40
    assert record["phantom"]["oracle_mae"] is not None and record["prepare_s"] > 0


def test_merge_fills_the_campaign_and_is_idempotent(visited, capsys):
    campaign, archive = visited
    assert main(["merge", "--campaign", str(campaign), str(archive)]) == 0
    assert "2 run(s) added" in capsys.readouterr().out
    first = [r.name for r in all_runs()[:2]]
    assert sorted(p.name for p in (campaign / "runs").iterdir()) == sorted(first)
    # What is done is read from the folder: the next visit starts at the third run.
    assert next_runs(campaign / "runs")[0] == all_runs()[2]
    table = (campaign / "table1.md").read_text()
    assert "2 of 60 runs done" in table and "| 1/5 |" in table
    assert "pending: 10 of 12 cells have no run yet" in table
    # The table's MAE is the pooled one of the merged predictions.
    rows = read_rows(campaign / "runs" / first[0] / "predictions.csv")
    mae = np.mean([abs(float(r["pred_age"]) - float(r["age"])) for r in rows])
    assert f"| {mae:.2f} (" in table
    assert main(["merge", "--campaign", str(campaign), str(archive)]) == 0
    assert "0 run(s) added, 2 already in (kept)" in capsys.readouterr().out
    assert len(json.loads((campaign / "visits.json").read_text())) == 1


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("members", [
    {"visit.json": b'{"id": "x"}', "../escape.txt": b"x"},
    {"visit.json": b'{"id": "x"}', "runs/vgg16_mv_fold0/model.ckpt": b"x"},
    {"visit.json": b'{"id": "x"}', "runs/not_a_run/metrics.json": b"{}"},
    {"runs/vgg16_mv_fold0/metrics.json": b"{}"},
    {"visit.json": b"[1, 2]", "runs/vgg16_mv_fold0/metrics.json": b"{}"},
    {"visit.json": b'{"id": "x"}', "runs/vgg16_mv_fold0/history.csv": b""},
])
def test_a_bad_archive_is_one_line_and_writes_nothing(members, tmp_path, capsys):
    archive = _archive(tmp_path / "bad.tar.gz", members)
    campaign = tmp_path / "campaign"
    assert main(["merge", "--campaign", str(campaign), str(archive)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-age campaign: ") and "\n" not in err and str(archive) in err
    assert not campaign.exists()


def _fake_cells(tmp: Path, mae: dict[tuple[str, str], float]) -> dict:
    """Fold-0 runs of every cell whose predictions miss every age by exactly ``mae`` years."""
    age = np.arange(40.0, 80.0)
    for (model, loss), err in mae.items():
        run = tmp / f"{model}_{loss}_fold0"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps(
            {"model": model, "backbone": "b", "loss": loss, "fold": 0,
             "train_mean_age": 60.0, "settings": {"seed": 42}}))
        pred = age + np.where(np.arange(len(age)) % 2, err, -err)
        (run / "predictions.csv").write_text("subject_id,age,pred_age\n" + "".join(
            f"s{i},{a},{p}\n" for i, (a, p) in enumerate(zip(age, pred, strict=True))))
    return collect_runs(tmp)


def test_claims_are_judged_on_the_numbers(tmp_path):
    grid = [(m, lo) for m in MODEL_ORDER for lo in LOSS_ORDER]
    paper_like = {(m, lo): 5.0 + MODEL_ORDER[::-1].index(m) + LOSS_ORDER[::-1].index(lo)
                  for m, lo in grid}
    verdicts = [v for _, _, v in claims(_fake_cells(tmp_path / "a", paper_like), {})]
    assert verdicts[1:] == ["yes", "yes"]
    other = {**paper_like, ("vgg16", "softmax"): 1.0}
    verdicts = [v for _, _, v in claims(_fake_cells(tmp_path / "b", other), {})]
    assert verdicts[1].startswith("no: mean-variance is best for 3 of 4 models")
    assert verdicts[2] == "no"
    partial = {k: v for k, v in paper_like.items() if k[0] != "inception"}
    verdicts = [v for _, _, v in claims(_fake_cells(tmp_path / "c", partial), {})]
    assert verdicts[1:] == ["pending: 3 of 12 cells have no run yet"] * 2
