"""Shared fixtures and helpers: one small phantom cohort per test session, tiny run overrides,
a run in this process, tiny trained checkpoints, and CSV rows read and written."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from bone_age.phantom import generate_cohort
from bone_age.utils.configs import CONF_DIR  # noqa: F401  (tests import it from here)

# The real clinical scan the phantom is measured against (five transfer syntaxes); its tests are
# skipped where it is absent. BONE_AGE_REAL_DICOM points them at another copy.
SHARED_DICOM = Path(os.environ.get("BONE_AGE_REAL_DICOM") or
                    Path(__file__).resolve().parents[2] / "shared" / "data" / "real-dicom")
needs_real_dicom = pytest.mark.skipif(
    not SHARED_DICOM.is_dir(),
    reason="the real scan is absent (../shared/data/real-dicom; BONE_AGE_REAL_DICOM=DIR)")


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A 40-subject phantom cohort (two-frame layout); returns its manifest."""
    out = tmp_path_factory.mktemp("cohort")
    return Path(generate_cohort(out, subjects=40, seed=7, progress=False))


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file (manifest, predictions, table) as dicts."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))


def cohort_rows(manifest: Path) -> list[dict[str, str]]:
    """A manifest's rows with absolute view paths, to be edited and written elsewhere."""
    rows = read_rows(manifest)
    for r in rows:
        for view in ("anterior", "posterior"):
            r[view] = os.path.abspath(Path(manifest).parent / r[view])
    return rows


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    """``rows`` as a CSV file (columns of the first row), folders created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_overrides(manifest: Path, tmp: Path) -> list[str]:
    """Hydra overrides for a seconds-long run: tiny trunk, tiny images, one epoch.

    ``threads=1``: ``threads=auto`` takes fewer threads when other jobs keep the cores busy,
    and a CPU's float results change with the thread count; tests that compare two runs'
    numbers must not depend on how busy the machine is.
    """
    return [
        "threads=1",
        "data=manifest", f"data.manifest={manifest}", "data.image_size=[32,16]",
        "data.batch_size=8", "data.cache_workers=0", "data.progress=false",
        "model.backbone=test_resnet", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=csv", f"paths.data_dir={tmp / 'data'}",
    ]


def run_in_process(overrides: list[str], out_dir) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out_dir)
        HydraConfig.instance().set_config(cfg)
        cfg.paths.output_dir = str(out_dir)
        from bone_age.training.train import train

        return train(cfg).metrics


@pytest.fixture(scope="module")
def runs(cohort, tmp_path_factory) -> dict:
    """Best checkpoints of a tiny dual-view mv run and a tiny single-view mse run."""
    tmp = tmp_path_factory.mktemp("predict_runs")
    out = {}
    for model, loss in (("multi_vgg16", "mv"), ("vgg16", "mse")):
        run = tmp / f"{model}_{loss}"
        run_in_process([*tiny_overrides(cohort, tmp), f"model={model}", f"loss={loss}"], run)
        out[model] = next((run / "checkpoints").glob("epoch*.ckpt"))
    return out
