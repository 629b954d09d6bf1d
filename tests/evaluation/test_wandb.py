"""logger=wandb offline: config, metrics, predictions table and figures in the run files."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from bone_age.evaluation.table1 import report
from tests.conftest import run_in_process, tiny_overrides

pytest.importorskip("wandb")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def _offline_run(folder, marker: bytes) -> tuple[bytes, object]:
    """The run's transaction log (.wandb) and its files/ folder.

    wandb 0.31 offline writes config and summary into the .wandb log only (files/config.yaml and
    wandb-summary.json appear after ``wandb sync``); the log's protobuf records hold the keys and
    string values as plain UTF-8, so they are found in its bytes. Its service process may still
    be writing when ``finish()`` returns (seen on a loaded machine): wait for ``marker``.
    """
    (run,) = (folder / "wandb").glob("offline-run-*")
    (log_file,) = run.glob("run-*.wandb")
    deadline = time.monotonic() + 60
    while marker not in log_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.5)
    return log_file.read_bytes(), run / "files"


def test_offline_run_logs_config_metrics_table_and_figures(cohort, offline):
    out = offline / "sweep" / "0_vgg16_mv_fold0"
    run_in_process([*tiny_overrides(cohort, offline), "model=vgg16", "loss=mv", "logger=wandb",
                    "trainer.max_epochs=2"], out)
    log, files = _offline_run(out, b"baseline_mae")
    # Config (resolved Hydra sections + run info), run name, epoch and test metrics.
    for text in (b"backbone", b"test_resnet", b"lambda_mean", b"vgg16-mv-fold0", b"train/loss",
                 b"val/loss", b"val/mae", b"test/mae", b"baseline_mae", b"predictions"):
        assert text in log, text
    (table_file,) = (files / "media" / "table").glob("predictions_*.table.json")
    table = json.loads(table_file.read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    with (out / "predictions.csv").open() as f:
        header = f.readline().strip().split(",")
    assert table["columns"] == header and len(table["data"]) == metrics["n_test"]
    assert all(isinstance(row[3], float) for row in table["data"])  # ages as numbers
    images = {p.name.rsplit("_", 2)[0] for p in (files / "media" / "images" / "figures").iterdir()}
    assert images == {"scatter", "bland_altman", "error_by_group", "learning_curves",
                      "reliability"}
    # The summary holds every section of the results, calibration's included.
    assert b"calib_cov90" in log and b"temperature" in log
    # Only pseudonyms: nothing from the DICOM patient module reaches W&B.
    assert b"PatientName" not in log and b"PatientID" not in log

    # The report step: Table 1 as a W&B table, a report run in the sweep's group.
    shutil.rmtree(out / "wandb")
    report(out.parent, "bone-age")
    log, files = _offline_run(out.parent, b"table1")
    assert b"table1" in log and b"sweep" in log  # the group is the sweep folder's name
    (table_file,) = (files / "media" / "table").glob("table1_*.table.json")
    table = json.loads(table_file.read_text())
    assert "mae" in table["columns"] and len(table["data"]) == 1
    assert {p.name.split("_")[0] for p in (files / "media" / "images" / "figures").iterdir()} \
        == {"mae", "scatter"}


def test_runs_of_a_sweep_are_grouped_by_its_folder():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from bone_age.evaluation.tracking import sweep_group
    from tests.conftest import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["hydra.sweep.dir=multirun/2026-11-24_12-00-00"],
                      return_hydra_config=True)
        for mode, group in ((RunMode.MULTIRUN, "2026-11-24_12-00-00"), (RunMode.RUN, None)):
            with read_write(cfg.hydra), open_dict(cfg.hydra):
                cfg.hydra.mode = mode
            HydraConfig.instance().set_config(cfg)
            assert sweep_group() == group


def test_no_local_path_program_or_git_state_is_sent(offline, monkeypatch):
    """Issue 33 item 8: W&B's capture of the machine is off and the logged settings hold no
    local path, so a folder naming a hospital or a patient never travels."""
    import sys

    import wandb

    from bone_age.evaluation.tracking import log_table1, wandb_logger

    private = offline / "St_Marys_Hospital" / "Doe_John_1931"
    (private / "cohort").mkdir(parents=True)
    (private / "cohort" / "manifest.csv").write_text("subject_id\n")
    monkeypatch.chdir(private)
    logger = wandb_logger(project="bone-age", save_dir=str(private / "run"), name="vgg16-mv-fold0")
    logger.log_hyperparams({
        "data": {"manifest": "cohort/manifest.csv", "cache_dir": str(private / "cache"),
                 "folds_file": None, "image_size": [64, 32], "source": {"path": str(private)}},
        "module": {"monitor": "val/loss"}, "model": {"backbone": "resnet10t"},
        "extra": [str(private / "x.csv"), "kept"]})
    logger.log_metrics({"train/loss": 1.0}, step=0)
    print(f"console line naming {private}")  # console capture is off: never sent
    wandb.finish()
    log, _ = _offline_run(private / "run", b"train/loss")
    assert b"resnet10t" in log and b"val/loss" in log and b"image_size" in log and b"kept" in log
    for text in (b"Hospital", b"Doe_John", str(offline).encode(), sys.executable.encode(),
                 b"manifest.csv", b"pytest", b"git"):
        assert text not in log, text
    assert not list((private / "run" / "wandb").glob("offline-run-*/files/requirements.txt"))
    assert not list((private / "run" / "wandb").glob("offline-run-*/files/output.log"))

    # The report's run: the same settings.
    sweep = private / "sweep"
    sweep.mkdir()
    log_table1([{"model": "vgg16", "mae": 1.0}], {}, sweep, "bone-age")
    log, _ = _offline_run(sweep, b"table1")
    for text in (b"Hospital", b"Doe_John", sys.executable.encode(), b"pytest"):
        assert text not in log, text


def test_a_run_gives_w_and_b_no_deprecated_setting_to_warn_about(offline, monkeypatch):
    import wandb

    from bone_age.evaluation.tracking import wandb_logger

    warned: list[str] = []
    monkeypatch.setattr(wandb, "termwarn", lambda message, *a, **k: warned.append(str(message)))
    logger = wandb_logger("bone-age", str(offline / "run"), "vgg16-mv-fold0")
    try:
        assert logger.experiment is not None  # wandb.init with the logger's own arguments
    finally:
        wandb.finish()
    assert not [m for m in warned if "anonymous" in m], warned


def test_a_jobs_wandb_run_is_ended_also_when_the_job_fails(offline, monkeypatch):
    """Issue 34: a sweep's jobs share the process; a failed job's W&B run is ended (marked
    failed) so that the next job starts its own, and a finished one's is ended as before."""
    import wandb

    from bone_age.evaluation.tracking import wandb_logger, wandb_run_of_job

    ended = []
    monkeypatch.setattr(wandb, "finish", lambda exit_code=None: ended.append(exit_code))
    loggers = [wandb_logger(project="bone-age", save_dir=str(offline / "run"), name="job")]
    with wandb_run_of_job(loggers):
        pass
    with pytest.raises(RuntimeError), wandb_run_of_job(loggers):
        raise RuntimeError("the job failed")
    with wandb_run_of_job([]):  # no W&B logger: nothing to end
        pass
    assert ended == [None, 1]
