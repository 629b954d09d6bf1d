"""The Table 1 campaign: a dry-run visit (the real script, tiny settings, on the CPU), its merge,
the order and budget of runs, archive checks and the paper's claims on known numbers."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from bone_age.bench.campaign.__main__ import main
from bone_age.bench.campaign.plan import (
    Run,
    all_runs,
    expected_seconds,
    may_share,
    next_runs,
    shared_seconds,
)
from bone_age.bench.campaign.table import claims
from bone_age.bench.campaign.visit import run_overrides, schedule
from bone_age.evaluation.pooling import LOSS_ORDER, MODEL_ORDER, collect_runs
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
                           "--jobs", "2", "--budget", "900"],
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
    # --jobs 2: the two inception runs (launch-bound) shared the one phantom, cache and GPU.
    assert record["jobs"] == 2 and all(r["jobs"] == 2 for r in record["runs"])
    assert record["runs"][0]["overlapped"] == [first[1]]
    assert record["runs"][1]["overlapped"] == [first[0]]
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


# Hostile archives (issue 37): an archive is input from another machine.
RUN = "vgg16_mv_fold0"
PREDICTIONS = b"subject_id,age,pred_age\ns1,50.0,52.0\ns2,60.0,59.0\n"


def _metrics(**change) -> bytes:
    m = {"model": "vgg16", "backbone": "vgg16", "loss": "mv", "fold": 0, "mae": 1.5,
         "pearson_r": 0.9, "train_mean_age": 55.0, "settings": {"seed": 42}}
    return json.dumps({k: v for k, v in {**m, **change}.items() if v is not None}).encode()


def _record(runs=(RUN,), **change) -> bytes:
    record = {"id": "v1", "dry_run": True, "runs": [
        {"name": r, "finished": True, "wall_s": 10.0, "gpu_busy": 0.5} for r in runs],
        "phantom": {"version": 1, "subjects": 40, "bayes_mae_floor": 1.0, "oracle_mae": 1.2}}
    return json.dumps({**record, **change}).encode()


def _good(run: str = RUN, **files) -> dict[str, bytes]:
    return {"visit.json": _record((run,)), f"runs/{run}/metrics.json": _metrics(),
            f"runs/{run}/predictions.csv": PREDICTIONS, **files}


def _tar_with(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """An archive whose members are given as a list (names may repeat)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _refused(archives: list[Path], campaign: Path, capsys) -> str:
    before = sorted(p.relative_to(campaign) for p in campaign.rglob("*")) \
        if campaign.exists() else None
    assert main(["merge", "--campaign", str(campaign), *map(str, archives)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-age campaign: ") and "\n" not in err, err
    after = sorted(p.relative_to(campaign) for p in campaign.rglob("*")) \
        if campaign.exists() else None
    assert after == before  # nothing written, not even a staging folder
    return err


def test_a_good_archive_merges(tmp_path, capsys):
    campaign = tmp_path / "campaign"
    archive = _archive(tmp_path / "a.tar.gz", _good(**{f"runs/{RUN}/run.log": b"log\n"}))
    assert main(["merge", "--campaign", str(campaign), str(archive)]) == 0
    assert "1 run(s) added" in capsys.readouterr().out
    assert (campaign / "runs" / RUN / "run.log").read_bytes() == b"log\n"
    assert [v["id"] for v in json.loads((campaign / "visits.json").read_text())] == ["v1"]
    assert not list(campaign.glob(".merge-*"))


@pytest.mark.parametrize("name", [
    f"runs/{RUN}//run.log",  # PurePosixPath drops the empty part; the join did not
    f"runs/{RUN}//.hydra/config.yaml",
    f"runs/{RUN}/./run.log",
    f"runs/{RUN}/.hydra/../run.log",
    f"runs//{RUN}/run.log",
    f"/runs/{RUN}/run.log",
])
def test_a_member_name_that_is_not_written_as_a_visit_writes_it_is_refused(
        name, tmp_path, capsys):
    archive = _archive(tmp_path / "a.tar.gz", _good(**{name: b"x"}))
    err = _refused([archive], tmp_path / "campaign", capsys)
    assert str(archive) in err and repr(name) in err


def test_a_member_is_written_only_inside_the_campaigns_run_folder(tmp_path, capsys):
    campaign, outside = tmp_path / "campaign", tmp_path / "outside"
    (campaign / "runs").mkdir(parents=True)
    outside.mkdir()
    (campaign / "runs" / RUN).symlink_to(outside)  # a planted link: the run would land there
    archive = _archive(tmp_path / "a.tar.gz", _good())
    err = _refused([archive], campaign, capsys)
    assert "outside" in err and not list(outside.iterdir())
    (campaign / "runs" / RUN).unlink()
    (campaign / "runs" / RUN).mkdir()
    (campaign / "runs" / RUN / ".hydra").symlink_to(outside)
    archive = _archive(tmp_path / "b.tar.gz", _good(**{
        f"runs/{RUN}/.hydra/config.yaml": b"seed: 1\n"}))
    err = _refused([archive], campaign, capsys)
    assert ".hydra/config.yaml" in err and not list(outside.iterdir())


@pytest.mark.parametrize(("members", "said"), [
    (_good(**{f"runs/{RUN}/metrics.json": b"not json"}), "metrics.json: not JSON"),
    (_good(**{f"runs/{RUN}/metrics.json": b"[1, 2]"}), "not a JSON object"),
    (_good(**{f"runs/{RUN}/metrics.json": b"[" * 100_000 + b"]" * 100_000}), "nested"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(mae=float("nan"))}), "mae nan"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(mae="1")}), "mae '1'"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(model="resnet50")}), "names model"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(loss="mse")}), "names model"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(fold=3)}), "names model"),
    (_good(**{f"runs/{RUN}/metrics.json": _metrics(kind="evaluation")}), "evaluation"),
    (_good(**{f"runs/{RUN}/predictions.csv": b"subject_id,age,pred_age\ns1,NaN,50\n"}),
     "not a finite number"),
    (_good(**{f"runs/{RUN}/predictions.csv": b"subject_id,age,pred_age\n"}), "no predictions"),
    (_good(**{f"runs/{RUN}/calibration.json": b"[]"}), "calibration.json"),
    (_good(**{f"runs/{RUN}/.hydra/config.yaml": b"x"}), None),  # settings are in metrics
    ({**_good(), f"runs/{RUN}/metrics.json": _metrics(settings=None),
      f"runs/{RUN}/.hydra/config.yaml": b"[" * 100_000}, "config.yaml"),
    ({"visit.json": _record(("vgg16_mv_fold\u0663",)),
      "runs/vgg16_mv_fold\u0663/metrics.json": _metrics()}, "is not"),
    ({"visit.json": _record(("vgg16_mv_fold0\n",)),
      "runs/vgg16_mv_fold0\n/metrics.json": _metrics()}, "is not"),
    ({**_good(), "visit.json": _record((RUN,), phantom={"version": 1})}, "phantom has no"),
    ({**_good(), "visit.json": _record((RUN,), phantom={
        "version": 1, "subjects": 4, "bayes_mae_floor": "x", "oracle_mae": 1})}, "bayes"),
    ({**_good(), "visit.json": json.dumps({"id": "v1", "runs": [
        {"name": RUN, "finished": True, "wall_s": "abc"}]}).encode()}, "wall_s 'abc'"),
    ({**_good(), "visit.json": json.dumps({"id": "v1", "runs": [
        {"name": RUN, "finished": True}]}).encode()}, "wall_s None"),
    ({**_good(), "visit.json": json.dumps({"id": "v1", "runs": ["x"]}).encode()}, "runs[0]"),
    ({**_good(), "visit.json": b"\xff\xfe"}, "visit.json is not JSON"),
    ({**_good(), "visit.json": b"{}"}, "id 'None'"),
    ({**_good(), "visit.json": _record((RUN,), id="a\nb")}, "is not a visit's id"),
    ({**_good(), "visit.json": _record(())}, "not record it as finished"),
    ({**_good(), "visit.json": _record((RUN, "vgg16_mse_fold0"))}, "vgg16_mse_fold0 has no"),
])
def test_a_run_that_table_could_not_use_is_refused_and_nothing_is_written(
        members, said, tmp_path, capsys):
    archive = _archive(tmp_path / "a.tar.gz", members)
    if said is None:  # a control: accepted
        assert main(["merge", "--campaign", str(tmp_path / "c"), str(archive)]) == 0
        return
    err = _refused([archive], tmp_path / "campaign", capsys)
    assert str(archive) in err and said in err, err


def test_two_members_of_one_name_are_refused(tmp_path, capsys):
    archive = _tar_with(tmp_path / "a.tar.gz", [*_good().items(),
                                                (f"runs/{RUN}/metrics.json", _metrics())])
    assert "appears twice" in _refused([archive], tmp_path / "campaign", capsys)


def test_a_merge_of_several_archives_is_all_or_nothing(tmp_path, capsys):
    good = _archive(tmp_path / "good.tar.gz", _good())
    bad = _archive(tmp_path / "bad.tar.gz", {
        **_good("vgg16_mse_fold0"), "runs/vgg16_mse_fold0/metrics.json": b"{"})
    campaign = tmp_path / "campaign"
    (campaign / "runs" / RUN).mkdir(parents=True)  # a run folder a crash left half-written
    (campaign / "runs" / RUN / "history.csv").write_text("old")
    assert str(bad) in _refused([good, bad], campaign, capsys)
    assert (campaign / "runs" / RUN / "history.csv").read_text() == "old"
    (campaign / "runs" / RUN / "notes.txt").write_text("mine")  # not a visit's: never deleted
    assert "notes.txt" in _refused([good], campaign, capsys)
    (campaign / "runs" / RUN / "notes.txt").unlink()
    assert main(["merge", "--campaign", str(campaign), str(good)]) == 0
    # The half-written folder was replaced whole by the archive's run.
    assert sorted(p.name for p in (campaign / "runs" / RUN).iterdir()) == [
        "metrics.json", "predictions.csv"]


def test_a_fifo_archive_is_refused_at_once(tmp_path, capsys):
    fifo = tmp_path / "visit.tar.gz"
    os.mkfifo(fifo)
    assert "FIFO" in _refused([fifo], tmp_path / "campaign", capsys)
    campaign = tmp_path / "c"
    campaign.mkdir()
    os.mkfifo(campaign / "table1.md")  # an output that would block: refused before any write
    good = _archive(tmp_path / "a.tar.gz", _good())
    assert "table1.md" in _refused([good], campaign, capsys)


@pytest.mark.parametrize("content", [b"\x00\xff binary", b"{}", b"[1]", b"[{}]",
                                     b"[" * 100_000, b'[{"id": "v", "runs": [{"name": 3}]}]'])
@pytest.mark.parametrize("action", ["merge", "next", "table"])
def test_a_damaged_visits_json_is_one_line(content, action, tmp_path, capsys):
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    (campaign / "visits.json").write_bytes(content)
    args = [action, "--campaign", str(campaign)]
    if action == "merge":
        args.append(str(_archive(tmp_path / "a.tar.gz", _good())))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-age campaign: ") and "\n" not in err
    assert "visits.json" in err
    assert not (campaign / "runs").exists()


def test_merge_and_table_exit_1_when_a_run_is_left_out_as_damaged(tmp_path, capsys):
    campaign = tmp_path / "campaign"
    damaged = campaign / "runs" / "vgg16_mse_fold0"
    damaged.mkdir(parents=True)
    (damaged / "metrics.json").write_bytes(_metrics(loss="mse"))
    (damaged / "predictions.csv").write_bytes(b"subject_id,age,pred_age\ns1,nan,1\n")
    archive = _archive(tmp_path / "a.tar.gz", _good())
    assert main(["merge", "--campaign", str(campaign), str(archive)]) == 1
    out, err = capsys.readouterr()
    assert "1 run(s) added" in out and "1 damaged run(s) left out" in err
    assert str(damaged) in err
    assert main(["table", "--campaign", str(campaign)]) == 1
    assert "1 damaged run(s) left out" in capsys.readouterr().err
    (damaged / "predictions.csv").write_bytes(PREDICTIONS)
    assert main(["table", "--campaign", str(campaign)]) == 0


@pytest.mark.parametrize("args", [
    ["--budget", "-1"], ["--budget", "nan"], ["--budget", "inf"], ["--budget", "0"],
    ["--budget", "abc"], ["--budget", "1e12"], ["--started", "nan"], ["--started", "inf"],
    ["--started", "-5"], ["--started", "1e12"], ["--max-runs", "-1"], ["--max-runs", "0"],
    ["--max-runs", "61"], ["--max-runs", "x"], ["--jobs", "0"], ["--jobs", "5"],
    ["--jobs", "two"], ["--share-cost", "1.5"], ["--share-cost", "-0.1"],
    ["--share-cost", "nan"], ["--compile", "vgg16,vgg19"], ["--compile", "VGG16"]])
def test_visit_numbers_are_checked_in_one_line(args, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["visit", "--out", str(out), "--dry-run", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-age campaign: ") and "\n" not in err, err
    assert args[0] in err and not out.exists()


# The GPU check's results.json as it writes them (two models; a dry run's rate is ignored).
def _rate(model: str, variant: str, value: float, first: float, dry: bool = False) -> dict:
    return {"name": f"b {model} {variant}: training samples/s", "value": value,
            "note": f"{model} + mv, {variant}, 224x224, batch 64; first step {first} s",
            "machine": {"gpu": {"name": "NVIDIA H200"}}, "date": "2026-11-27T12:00:00+00:00",
            "dry_run": dry}


@pytest.fixture
def gpu_results(tmp_path) -> Path:
    path = tmp_path / "results.json"
    path.write_text(json.dumps([
        _rate("resnet50", "bf16", 2000.0, 9.0), _rate("resnet50", "bf16+cl", 2670.0, 8.0),
        _rate("vgg16", "bf16+cl", 1.0, 0.0, dry=True), _rate("vgg16", "bf16", 2000.0, 2.0),
        {"name": "env bf16 matmul rate (the MFU denominator)", "value": 800.0}]))
    return path


def test_a_run_without_records_is_estimated_from_the_gpu_checks_rate(gpu_results):
    from bone_age.bench.campaign.estimate import TRAIN, VAL, read_gpu_rates

    rates = read_gpu_rates(gpu_results)
    assert rates.samples_per_s == {"resnet50": 2670.0, "vgg16": 2000.0}  # bf16+cl preferred
    seconds, basis = expected_seconds(Run("resnet50", "mv", 0), {}, rates)
    epoch = (TRAIN + VAL / 3) / 2670.0
    assert seconds == pytest.approx((100 * epoch + 8.0 + 30.0) * 1.15)
    assert "GPU check (NVIDIA H200 2026-11-27)" in basis and "100 epochs" in basis
    # No rate for the model: the first guess, as before.
    assert "first guess" in expected_seconds(Run("inception", "mv", 0), {}, rates)[1]
    assert read_gpu_rates(gpu_results.parent / "none.json") is None


def test_records_replace_the_estimates_parts_as_they_come(gpu_results):
    from bone_age.bench.campaign.estimate import TRAIN, VAL, read_gpu_rates
    from bone_age.bench.campaign.plan import estimates

    rates = read_gpu_rates(gpu_results)
    epoch = (TRAIN + VAL / 3) / 2670.0
    # A vgg16 + mv run stopped early after 40 epochs, 60 s outside training: resnet50 + mv
    # takes its epochs (same loss) and its set-up, still at resnet50's rate.
    records = {"vgg16_mv_fold0": {"wall_s": 100.0, "train_seconds": 40.0, "epochs": 40}}
    seconds, basis = expected_seconds(Run("resnet50", "mv", 0), records, rates)
    assert seconds == pytest.approx((40 * epoch + 60.0) * 1.15)
    assert "40 epochs (most of 1 recorded mv run(s))" in basis
    # Another loss: the configuration's max_epochs still.
    assert "100 epochs" in expected_seconds(Run("resnet50", "mse", 0), records, rates)[1]
    # Once a run of the model is in, its wall time is used, the GPU check's estimate second.
    records["resnet50_mse_fold0"] = {"wall_s": 150.0, "train_seconds": 120.0, "epochs": 50}
    (used, why), (gpu, gpu_why) = estimates(Run("resnet50", "mv", 1), records, rates)
    assert used == pytest.approx(150.0 * 1.15) and "recorded resnet50" in why
    assert gpu == pytest.approx((40 * epoch + 60.0) * 1.15) and "GPU check" in gpu_why


def test_next_prints_the_estimate_and_its_source(gpu_results, tmp_path, capsys):
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    visit = {"id": "v1", "runs": [{"name": "resnet50_mse_fold0", "finished": True,
                                   "wall_s": 150.0, "train_seconds": 120.0, "epochs": 50}]}
    (campaign / "visits.json").write_text(json.dumps([visit]))
    assert main(["next", "--campaign", str(campaign), "--gpu-results", str(gpu_results)]) == 0
    out = capsys.readouterr().out.splitlines()
    resnet = out.index(next(x for x in out if x.startswith("resnet50_mse_fold0")))
    assert "slowest of 1 recorded resnet50" in out[resnet]
    assert "GPU check" in out[resnet + 1] and out[resnet + 1].lstrip().startswith("[")
    assert any(x.startswith("vgg16_mse_fold0") and "GPU check" in x for x in out)
    assert any(x.startswith("inception_mse_fold0") and "first guess" in x for x in out)


@pytest.mark.parametrize("content", [b"\xff", b"{", b"{}", b"[1]",
                                     json.dumps([_rate("vgg16", "bf16", -1.0, 0.0)]).encode()])
def test_a_damaged_gpu_results_is_one_line(content, tmp_path, capsys):
    bad = tmp_path / "results.json"
    bad.write_bytes(content)
    assert main(["next", "--campaign", str(tmp_path), "--gpu-results", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bone-age campaign: ") and "\n" not in err and "results.json" in err


def test_a_visit_record_with_bad_epochs_is_one_line(tmp_path, capsys):
    visit = {"id": "v1", "runs": [{"name": "vgg16_mse_fold0", "finished": True,
                                   "wall_s": 1.0, "epochs": "many"}]}
    (tmp_path / "visits.json").write_text(json.dumps([visit]))
    assert main(["next", "--campaign", str(tmp_path)]) == 2
    assert "epochs 'many'" in capsys.readouterr().err


def test_only_launch_bound_runs_share_the_gpu():
    inception, resnet = Run("inception", "mse", 0), Run("resnet50", "mv", 0)
    vgg, multi = Run("vgg16", "mse", 0), Run("multi_vgg16", "mv", 0)
    assert may_share(vgg, []) and may_share(inception, [resnet])
    assert not may_share(vgg, [inception]) and not may_share(inception, [multi])
    assert not may_share(multi, [vgg])
    assert shared_seconds(100.0, 1) == 100.0 and shared_seconds(100.0, 2) == 200.0
    assert shared_seconds(100.0, 3, 0.25) == pytest.approx(150.0)


def test_compile_is_asked_per_model(tmp_path):
    compiled = frozenset({"vgg16", "multi_vgg16"})
    assert "speed.compile=true" in run_overrides(Run("vgg16", "mse", 0), tmp_path, False,
                                                 compiled)
    assert "speed.compile=true" not in run_overrides(Run("resnet50", "mse", 0), tmp_path,
                                                     False, compiled)
    assert "speed.compile=true" not in run_overrides(Run("vgg16", "mse", 0), tmp_path, False)


def _fake(seconds: float, work: Path):
    """A run's command that takes ``seconds`` and leaves metrics.json, as a finished run does."""
    def command(run: Run) -> list[str]:
        out = work / "runs" / run.name / "metrics.json"
        return [sys.executable, "-c", f"import time; time.sleep({seconds}); "
                f"open({str(out)!r}, 'w').write('{{}}')"]
    return command


def test_schedule_packs_launch_bound_runs_and_records_the_overlap(tmp_path):
    todo = [Run("inception", "mse", 0), Run("inception", "softmax", 0), Run("vgg16", "mse", 0)]
    ended: list[str] = []
    runs, not_started = schedule(todo, tmp_path, _fake(1.0, tmp_path), lambda r: (1.0, "t"),
                                 time.time() + 60, jobs=2, done=lambda r: ended.append(r["name"]),
                                 poll_s=0.05)
    assert not not_started and [r["name"] for r in runs] == [r.name for r in todo]
    assert all(r["finished"] for r in runs) and sorted(ended) == sorted(r.name for r in todo)
    a, b, vgg = runs
    assert a["overlapped"] == [b["name"]] and b["overlapped"] == [a["name"]]
    assert a["jobs"] == b["jobs"] == 2
    # The compute-bound run waited for an empty GPU, and ran alone.
    assert vgg["start"] >= max(a["end"], b["end"]) and vgg["overlapped"] == []
    assert vgg["jobs"] == 1


@pytest.mark.parametrize(("share_cost", "together"), [(1.0, False), (0.4, True)])
def test_a_run_starts_beside_another_only_if_its_shared_estimate_fits(share_cost, together,
                                                                       tmp_path):
    # Expected 10 s each with 15 s left: two at once fit only if sharing costs under half a run.
    todo = [Run("resnet50", "mse", 0), Run("resnet50", "softmax", 0)]
    runs, not_started = schedule(todo, tmp_path, _fake(0.5, tmp_path), lambda r: (10.0, "t"),
                                 time.time() + 15, jobs=2, share_cost=share_cost, poll_s=0.05)
    assert not not_started and all(r["finished"] for r in runs)
    assert bool(runs[0]["overlapped"]) is together
    assert runs[1]["jobs"] == (2 if together else 1)


def test_runs_going_at_the_deadline_are_stopped_and_the_rest_not_started(tmp_path):
    todo = [Run("inception", "mse", 0), Run("inception", "softmax", 0),
            Run("inception", "mv", 0)]
    t = time.time()
    runs, not_started = schedule(todo, tmp_path, _fake(30, tmp_path), lambda r: (0.5, "t"),
                                 t + 1.5, jobs=2, share_cost=0.0, poll_s=0.05)
    assert time.time() - t < 10
    assert [r["name"] for r in runs] == [r.name for r in todo[:2]]
    assert all(not r["finished"] and r["exit"] is None and "budget" in r["why"] for r in runs)
    assert [n["name"] for n in not_started] == [todo[2].name]


@pytest.mark.parametrize(("field", "value"), [("jobs", 0), ("jobs", 1.5), ("jobs", True),
                                              ("overlapped", "vgg16_mv_fold0"),
                                              ("overlapped", ["../x"])])
def test_a_visit_record_with_bad_sharing_is_one_line(field, value, tmp_path, capsys):
    visit = {"id": "v1", "runs": [{"name": "vgg16_mse_fold0", "finished": True,
                                   "wall_s": 1.0, field: value}]}
    (tmp_path / "visits.json").write_text(json.dumps([visit]))
    assert main(["next", "--campaign", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert f".{field} " in err and "\n" not in err, err
