"""What a run prints: progress lines, quiet third-party output, the closing summary."""

from __future__ import annotations

import itertools
import logging
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from bone_age.utils import console
from tests.conftest import tiny_overrides

ROOT = Path(__file__).resolve().parents[2]


def test_quiet_drops_adverts_and_hardware_lines_but_keeps_actionable_ones():
    console.quiet_third_party()
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    seen_records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen_records.append(record.getMessage())
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("💡 Tip: For seamless cloud logging, try installing [litlogger]")
        logger.info("TPU available: False, using: 0 TPU cores")
        logger.info("GPU available: True (cuda), used: False")  # actionable: a GPU left idle
        logger.info("Restoring states from the checkpoint path at x.ckpt")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert seen_records == ["GPU available: True (cuda), used: False",
                            "Restoring states from the checkpoint path at x.ckpt"]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        console.quiet_third_party()
        warnings.warn("LeafSpec is deprecated", FutureWarning, stacklevel=1)
        warnings.warn("Precision bf16-mixed is not supported by the model summary.  Estimated "
                      "model size in MB will not be accurate.", UserWarning, stacklevel=1)
        warnings.warn("data.manifest: 3 rows have no age", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["data.manifest: 3 rows have no age"]


def test_line_progress_outside_a_terminal_is_periodic_lines(capsys, monkeypatch):
    monkeypatch.setattr(console, "log", logging.getLogger("bone_age.test_unconfigured"))
    clock = itertools.chain([0.0, 1.0, 2.0, 12.0, 13.0, 25.0, 26.0, 30.0, 31.0],
                            itertools.count(100.0))
    # The module's clock only (not the time module every thread shares), and no ticker thread
    # drawing from it: the lines cannot depend on how busy the machine is.
    monkeypatch.setattr(console, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    monkeypatch.setattr(console, "_tick", lambda *args: None)
    bar = console.progress(total=5, desc="caching studies", unit="studies", every_s=10)
    for _ in range(5):
        bar.update()
    bar.close()  # the last count was just shown: no second line
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["caching studies: 3/5 studies, 12 s", "caching studies: 5/5 studies, 25 s"]
    bar = console.progress(total=2, desc="phantom", unit="subjects", every_s=10)
    bar.update()
    bar.close()  # 1 shown by nothing yet: closing shows it
    assert capsys.readouterr().err.strip() == "phantom: 1/2 subjects, 5 s"
    assert list(console.progress(range(3), total=3, enabled=False)) == [0, 1, 2]
    assert capsys.readouterr().err == ""


def test_run_summary_names_figures_files_and_next_commands(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    for name in ("metrics.json", "scatter.png", "predictions.csv", "checkpoints/epoch007.ckpt",
                 "checkpoints/last.ckpt"):
        (tmp_path / name).write_text("x")
    text = console.run_summary({"mae": 3.761, "mae_sd": 2.9, "pearson_r": 0.851,
                                "baseline_mae": 7.3, "n_test": 201, "fold": 0}, tmp_path, 215)
    assert "finished in 3 min 35 s" in text
    assert "test MAE 3.76 y (SD 2.90), r 0.85" in text and "7.30 y" in text
    for name in ("metrics.json", "scatter.png", "predictions.csv", "checkpoints/epoch007.ckpt"):
        assert name in text
    assert f"bone_age.predict {tmp_path / 'checkpoints' / 'epoch007.ckpt'}" in text
    assert "bone_age.report multirun/" in text and "experiment=table1_cpu" in text
    assert "yardsticks" not in text  # not a phantom cohort


def test_run_summary_commands_run_as_printed(tmp_path, monkeypatch):
    """The next commands name this interpreter (a new shell's python may lack torch) and quote
    paths with spaces; they parse as shell words and the interpreter they name exists."""
    run = tmp_path / "my runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "epoch003.ckpt").write_text("x")
    monkeypatch.chdir(tmp_path)
    text = console.run_summary({"mae": 4.0, "pearson_r": 0.8, "baseline_mae": 7.0, "n_test": 9,
                                "phantom_floor_mae": 2.231, "phantom_oracle_mae": 3.36},
                               run, 60)
    assert "floor 2.23 y" in text and "oracle 3.36 y" in text
    commands = [line.split("   (")[0].strip() for line in text.splitlines()
                if " -m bone_age." in line]
    assert len(commands) == 4
    for command in commands:
        words = shlex.split(command)
        assert Path(words[0]).resolve() == Path(sys.executable).resolve(), words[0]
        assert words[1] == "-m" and words[2].startswith("bone_age.")
    predict = shlex.split(commands[0])
    assert Path(predict[3]) == run / "checkpoints" / "epoch003.ckpt"


@pytest.mark.slow
def test_a_run_reads_well_in_a_log_file(cohort, tmp_path):
    """A run with its output going to a file (not a terminal): epoch lines, no third-party
    noise, a closing summary with the run folder."""
    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides(cohort, tmp_path)
                 if not o.startswith("trainer.max_epochs")]
    proc = subprocess.run([sys.executable, "-m", "bone_age.run", *overrides,
                           "trainer.max_epochs=2", "trainer.enable_model_summary=true",
                           f"hydra.run.dir={run}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for noise in ("Tip:", "TPU available", "LeafSpec", "does not have many workers", "\r",
                  "Total estimated model params size", "Trainable params"):
        assert noise not in out, noise
    assert re.search(r"epoch 1/2  train loss [\d.]+  val loss [\d.]+  val MAE [\d.]+ y", out)
    assert "epoch 2/2" in out and "evaluating the tested weights once" in out
    assert re.search(r"epoch 1/2 .* [\d.]+ s  ~\d+ s left at most", out)  # the run's ETA
    assert re.search(r"\d+ inner-validation subjects, \d+ held-out subjects", out)
    tail = out[out.index("bone-age: finished in"):]
    assert f"run folder: {run}" in tail and "metrics.json" in tail and "scatter.png" in tail
    assert "bone_age.predict" in tail
    # the run's own log file holds the same lines
    assert "epoch 2/2" in (run / "run.log").read_text()


def test_counts_agree_with_their_nouns():
    assert console.plural(1, "study") == "1 study"
    assert console.plural(2, "study") == "2 studies"
    assert console.plural(0, "predicted study") == "0 predicted studies"
    assert console.plural(3, "file") == "3 files" and console.plural(1, "file") == "1 file"
    assert console.plural(2, "day") == "2 days"
