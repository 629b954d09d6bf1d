"""ONNX export: onnxruntime matches PyTorch, metadata and model card, predict --onnx."""

from __future__ import annotations

import csv
import json

import numpy as np
import onnx
import pytest

from bone_age.inference.export import main as export_main
from bone_age.inference.predict import main as predict_main
from bone_age.inference.predictor import OnnxPredictor, TorchPredictor
from tests.conftest import run_in_process, tiny_overrides


@pytest.fixture(scope="module")
def exported(cohort, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    run_in_process([*tiny_overrides(cohort, tmp), "model=multi_vgg16", "loss=mv"], tmp / "run")
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert export_main([str(ckpt), "--out", str(tmp / "model.onnx")]) == 0
    return ckpt, tmp / "model.onnx"


def test_onnxruntime_matches_pytorch(exported):
    ckpt, model = exported
    torch_pred, onnx_pred = TorchPredictor(ckpt), OnnxPredictor(model)
    rng = np.random.default_rng(0)
    counts = rng.poisson(50, size=(3, 2, 32, 16)).astype(np.float32)  # batch != export's 2
    sex = np.array([0, 1, 0], dtype=np.float32)
    for a, b in zip(torch_pred(counts, sex), onnx_pred(counts, sex), strict=True):
        assert a.shape == b.shape == (3,)
        assert np.abs(a - b).max() < 1e-3


def test_metadata_and_model_card(exported, cohort):
    ckpt, model = exported
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    meta = json.loads(props["bone_age"])
    assert meta["data"]["views"] == ["anterior", "posterior"]
    card = model.with_suffix(".md").read_text()
    for text in ("Research use only", "Not a medical device", "MAE (SD)",
                 "synthetic phantom", "female"):
        assert text in card
    with cohort.open() as f:
        ids = [r["subject_id"] for r in csv.DictReader(f)]
    assert not any(i in card for i in ids)


def test_predict_with_onnx_equals_checkpoint(exported, cohort, tmp_path):
    ckpt, model = exported
    a, b = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    assert predict_main([str(ckpt), str(cohort), "--out", str(a)]) == 0
    assert predict_main([str(model), str(cohort), "--onnx", "--out", str(b)]) == 0
    with a.open() as fa, b.open() as fb:
        rows_a, rows_b = list(csv.DictReader(fa)), list(csv.DictReader(fb))
    assert [r["subject_id"] for r in rows_a] == [r["subject_id"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert float(ra["pred_age"]) == pytest.approx(float(rb["pred_age"]), abs=2e-3)
