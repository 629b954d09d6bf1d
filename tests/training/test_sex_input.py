"""Sex as an input (model.use_sex), and an aspect-preserving run with calibration, end to end."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from bone_age.models import BoneAgeNet, count_parameters
from tests.conftest import run_in_process, tiny_overrides


@pytest.mark.parametrize("views", [1, 2])
def test_sex_adds_inputs_and_changes_the_output(views):
    kwargs = dict(backbone="test_resnet", views=views, num_outputs=41)
    without, with_sex = BoneAgeNet(**kwargs), BoneAgeNet(**kwargs, use_sex=True)
    extra = count_parameters(with_sex) - count_parameters(without)
    # Two views: one more input to the fusion layer (160 weights). One view: a fusion layer is
    # added to carry sex (161 -> 160 -> head) instead of the branch feeding the head directly.
    assert extra == (160 if views == 2 else 161 * 160 + 160)
    torch.manual_seed(0)
    images = torch.randn(2, views, 3, 32, 16)
    with_sex.eval()
    with torch.no_grad():
        female = with_sex(images, torch.tensor([0.0, 0.0]))
        male = with_sex(images, torch.tensor([1.0, 1.0]))
    assert not torch.allclose(female, male)
    with pytest.raises(ValueError, match="sex"):
        with_sex(images, None)


def test_sex_and_pad_run_end_to_end_with_calibration(cohort, tmp_path):
    out = tmp_path / "run"
    metrics = run_in_process(["experiment=ablation_sex", *tiny_overrides(cohort, tmp_path),
                              "data.subjects=null", "data.resize=pad",
                              "data.image_size=[64,16]"], out)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["use_sex"] is True and saved["resize"] == "pad"
    for key in ("calib_cov50", "calib_cov90", "temperature", "gap_r_age",
                "gap_corrected_r_age", "gap_correction"):
        assert key in saved or key in json.loads((out / "calibration.json").read_text())
    assert metrics["calib_cov90"] == saved["calib_cov90"]
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["bone_age"]["model"]["use_sex"] is True
    assert ckpt["bone_age"]["data"]["image_size"] == [64, 16]
    assert ckpt["bone_age"]["data"]["resize"] == "pad"
    with (out / "age_gap.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == saved["n_test"]
    assert set(rows[0]) == {"subject_id", "sex", "age", "pred_age", "gap", "gap_corrected"}
    assert (out / "reliability.png").stat().st_size > 1000
