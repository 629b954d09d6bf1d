"""Shared fixtures: one small phantom cohort per test session, and tiny run overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from bone_age.phantom import generate_cohort

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
SHARED_DICOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-dicom"


@pytest.fixture(scope="session")
def cohort(tmp_path_factory) -> Path:
    """A 40-subject phantom cohort (two-frame layout); returns its manifest."""
    out = tmp_path_factory.mktemp("cohort")
    return Path(generate_cohort(out, subjects=40, seed=7, progress=False))


def tiny_overrides(manifest: Path, tmp: Path) -> list[str]:
    """Hydra overrides for a seconds-long run: tiny trunk, tiny images, one epoch."""
    return [
        "data=manifest", f"data.manifest={manifest}", "data.image_size=[32,16]",
        "data.batch_size=8", "data.cache_workers=0", "data.progress=false",
        "model.backbone=test_resnet", "trainer=cpu", "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "logger=csv", f"paths.data_dir={tmp / 'data'}",
    ]
