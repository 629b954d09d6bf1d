"""The GPU path: its configuration and the GPU check's dry run (CPU), and the smoke tests that
``make gpu-check`` runs on a GPU machine (``pytest -m gpu``; skipped without CUDA)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from bone_age.bench.gpu.sizes import TABLE1_MODELS
from bone_age.data import DataError
from bone_age.data.datamodule import loader_workers
from bone_age.data.transforms import BatchAugment, CountNormalize, rowwise_quantile
from bone_age.training.precision import supported_precision
from tests.conftest import CONF_DIR, tiny_overrides

ROOT = Path(__file__).resolve().parents[2]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


# -- on any machine ---------------------------------------------------------------------------

def test_trainer_gpu_takes_the_fast_path_and_fp32_is_one_override_away():
    cfg = _compose("trainer=gpu")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed"
    assert cfg.trainer.max_epochs == 100  # the rest of trainer/default is kept
    assert cfg.speed.channels_last is True
    assert cfg.data.pin_memory is True and cfg.data.num_workers == "auto"
    assert _compose("trainer=gpu", "trainer.precision=32-true").trainer.precision == "32-true"
    cpu = _compose("trainer=cpu")
    assert cpu.trainer.precision == "32-true" and cpu.speed.channels_last is False
    assert cpu.data.pin_memory is False and cpu.data.num_workers == 0


def test_bf16_falls_back_to_fp16_on_a_gpu_without_bf16(monkeypatch):
    node = {"accelerator": "gpu", "precision": "bf16-mixed"}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert supported_precision(node) == "16-mixed"
    assert supported_precision({**node, "precision": "32-true"}) == "32-true"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert supported_precision(node) == "bf16-mixed"


def test_bf16_on_a_cpu_only_where_it_is_native(monkeypatch):
    import bone_age.training.precision as train_module

    node = {"accelerator": "cpu", "precision": "bf16-mixed"}
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: False)
    assert supported_precision(node) == "32-true"
    monkeypatch.setattr(train_module, "cpu_has_bf16", lambda: True)
    assert supported_precision(node) == "bf16-mixed"


def test_loader_workers_auto_and_bad_values():
    n = loader_workers("auto")
    assert 0 <= n <= 8
    assert loader_workers(3) == 3
    for bad in (-1, "many", 2.5, True):
        with pytest.raises(DataError, match="data.num_workers"):
            loader_workers(bad)


def test_count_normalisation_past_torch_quantile_size_limit():
    # 256 two-view 224 x 224 scans: 25.7 M values, over torch.quantile's 16 M limit.
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((256, 2, 224, 224), 3.0), generator=g)
    counts[:, :, :20, :20] = torch.rand(256, 2, 20, 20, generator=g) * 500
    out = CountNormalize("percentile", 99.0)(counts)
    assert out.shape == (256, 2, 3, 224, 224) and torch.isfinite(out).all()
    ref = np.percentile(counts[:3].flatten(2).numpy(), 99.0, axis=2)
    got = rowwise_quantile(counts[:3].flatten(2), 0.99).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_rowwise_quantile_of_a_row_past_the_limit(monkeypatch):
    import bone_age.data.transforms as tr

    monkeypatch.setattr(tr, "_QUANTILE_MAX_NUMEL", 1000)
    x = torch.rand(3, 5000, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(rowwise_quantile(x, 0.99).numpy(),
                               np.percentile(x.numpy(), 99.0, axis=1), rtol=1e-5)
    y = torch.rand(7, 300, generator=torch.Generator().manual_seed(2))  # several chunks
    np.testing.assert_allclose(rowwise_quantile(y, 0.5).numpy(),
                               np.percentile(y.numpy(), 50.0, axis=1), rtol=1e-5)


def test_traced_rowwise_quantile_uses_no_torch_quantile(monkeypatch):
    """Traced (ONNX export, torch.compile), the percentile comes from sorted order statistics:
    torch 2.11 (the GPU image's) cannot export torch.quantile over a symbolic batch, found by
    the GPU check and again by `make rehearsal` (experiments/table1/README.md)."""
    import bone_age.data.transforms as tr

    x = torch.rand(4, 2, 900, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    monkeypatch.setattr(tr.torch, "quantile", lambda *a, **k: pytest.fail("torch.quantile"))
    for q in (0.0, 0.5, 0.99, 1.0):
        np.testing.assert_allclose(rowwise_quantile(x, q).numpy(),
                                   np.quantile(x.numpy(), q, axis=-1), rtol=1e-6)


def test_the_rehearsal_installs_the_gpu_images_versions_and_runs_a_dry_visit(tmp_path):
    """`make rehearsal` in dry form (--print: no install, no network): the image's pinned
    versions, bone-age's wheels by visit.sh, a dry visit, then ONNX export and predict."""
    from bone_age.bench.gpu.wheels import MISSING_ON_GPU_MACHINE

    reqs = (ROOT / "experiments" / "gpu" / "image-requirements.txt").read_text().splitlines()
    pins = dict(r.split("==") for r in reqs if "==" in r and not r.startswith("#"))
    assert {k: pins[k] for k in ("torch", "torchvision", "pytorch-lightning", "torchmetrics",
                                 "onnx", "onnxruntime")} == {
        "torch": "2.11.0", "torchvision": "0.26.0", "pytorch-lightning": "2.6.6",
        "torchmetrics": "1.9.0", "onnx": "1.23.1", "onnxruntime": "1.30.0"}
    names = {r.split("==")[0] for r in reqs if r and not r.startswith("#")}
    assert not names & set(MISSING_ON_GPU_MACHINE)  # those come from the wheels, as there
    venv = tmp_path / "venv"
    env = {**os.environ, "REHEARSAL_VENV": str(venv), "REHEARSAL_PYTHON": sys.executable}
    done = subprocess.run([str(ROOT / "experiments" / "table1" / "rehearsal.sh"),
                           str(tmp_path / "out"), "--print"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    py = f"{venv}/bin/python"
    assert f"{sys.executable} -m venv {venv} " in lines
    assert f"{py} -m pip install -q -r experiments/gpu/image-requirements.txt " in lines
    visit = next(x for x in lines if "experiments/table1/visit.sh" in x)
    assert f"PYTHON={py}" in visit and "--dry-run" in visit
    export = lines.index(next(x for x in lines if "-m bone_age.export" in x))
    assert lines.index(visit) < export and "-m bone_age.predict" in lines[export + 1]
    assert not venv.exists() and not (tmp_path / "out").exists()  # nothing ran
    make = subprocess.run(["make", "-n", "rehearsal"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert "experiments/table1/rehearsal.sh" in make.stdout
    assert "rehearsal" not in subprocess.run(["make", "-n", "test"], cwd=ROOT,
                                             capture_output=True, text=True).stdout


def test_batches_are_normalised_on_the_device_they_arrive_on():
    """Lightning moves batches to the GPU but not a DataModule's modules (the first GPU run
    failed so: buffers on the CPU, batch on cuda:0). The meta device stands in for a GPU."""
    from bone_age.data.datamodule import BoneAgeDataModule
    from bone_age.phantom.source import PhantomSource

    dm = BoneAgeDataModule(PhantomSource(40))
    batch = {"image": torch.rand(2, 2, 32, 16, device="meta")}
    out = dm.on_after_batch_transfer(batch, 0)["image"]
    assert out.device.type == "meta" and out.shape == (2, 2, 3, 32, 16)
    assert dm.normalize.mean.device.type == "meta"


def test_gpu_check_dry_run_measures_every_stage(tmp_path):
    """``make gpu-check``'s program, every stage at tiny sizes on the CPU (kept from rotting)."""
    out = tmp_path / "gpu"
    proc = subprocess.run([sys.executable, "-m", "bone_age.bench.gpu", "--out", str(out),
                           "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    names = [r["name"] for r in results]
    assert not [n for n in names if n.endswith("(failed)") or n.endswith("(skipped)")], names
    for prefix in ("env ", "a GPU smoke", "cohort ", "c multi_vgg16 input pipeline",
                   "d paper-scale epoch", "d best validation MAE", "e PROJECTION",
                   "b multi_vgg16 bf16+cl+compile", "f resnet50"):
        assert any(n.startswith(prefix) for n in names), prefix
    for model in TABLE1_MODELS:
        for mode in ("fp32", "bf16", "bf16+cl"):
            rate = next(r for r in results if r["name"] == f"b {model} {mode}: training samples/s")
            assert rate["value"] > 0
    for r in results:
        assert {"name", "value", "unit", "target", "compare", "met", "machine", "date"} <= set(r)
        assert "gpu" in r["machine"] and r["dry_run"] is True
    decode = next(r for r in results if r["name"].startswith("env bf16-autocast decoded"))
    assert decode["met"] is True
    assert "DRY RUN" in (out / "results.md").read_text()
    assert "stage f packing took" in (out / "log.txt").read_text()


# -- on a CUDA GPU (make gpu-check) -----------------------------------------------------------

@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fp32", "bf16+cl"])
@pytest.mark.parametrize("loss_name", ["mse", "mv"])
@pytest.mark.parametrize("model", TABLE1_MODELS)
def test_table1_model_trains_on_cuda(model, loss_name, mode):
    from bone_age.bench.gpu.throughput import build_net
    from bone_age.losses import LOSSES

    torch.manual_seed(0)
    loss = LOSSES[loss_name]()
    net = build_net(model, loss.num_outputs).cuda().train()
    images = torch.randn(4, net.views, 3, 224, 224, device="cuda")
    if mode != "fp32":
        net.to(memory_format=torch.channels_last)
    ages = torch.tensor([41.0, 55.0, 63.0, 79.0], device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=mode != "fp32"):
        outputs = net(images)
        value = loss(outputs, ages)
        age, _ = loss.predict(outputs)
    value.backward()
    assert outputs.dtype == torch.float32 and age.dtype == torch.float32
    assert torch.isfinite(value)
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # eq. 5 decoded under autocast equals float32 decoding of the same outputs
    np.testing.assert_allclose(age.detach().cpu().numpy(),
                               loss.predict(outputs.detach())[0].cpu().numpy(),
                               atol=1e-3)


@cuda
@pytest.mark.gpu
def test_batch_augmentation_on_cuda_is_reproducible():
    counts = torch.poisson(torch.full((8, 2, 224, 224), 5.0, device="cuda"))
    augment = BatchAugment()

    def draw(seed: int) -> torch.Tensor:
        return augment(counts, torch.Generator(device="cuda").manual_seed(seed))

    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))
    assert draw(1).device.type == "cuda"


@cuda
@pytest.mark.gpu
def test_count_normalisation_on_cuda_at_batch_256():
    counts = torch.poisson(torch.full((256, 2, 224, 224), 3.0, device="cuda"))
    normalize = CountNormalize("percentile", 99.0).cuda()
    out = normalize(counts)
    ref = CountNormalize("percentile", 99.0)(counts[:4].cpu())
    assert out.shape == (256, 2, 3, 224, 224) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:4].cpu(), ref, atol=1e-4, rtol=1e-4)


@cuda
@pytest.mark.gpu
def test_hydra_run_on_gpu_then_predict_and_export(cohort, tmp_path):
    from bone_age.inference.export import main as export_main
    from bone_age.inference.predict import main as predict_main

    run = tmp_path / "run"
    overrides = [o for o in tiny_overrides(cohort, tmp_path) if o != "trainer=cpu"]
    proc = subprocess.run([sys.executable, "-m", "bone_age.run", *overrides, "trainer=gpu",
                           "data.image_size=[64,32]", f"hydra.run.dir={run}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["n_test"] > 0 and np.isfinite(metrics["mae"])
    ckpt = next((run / "checkpoints").glob("epoch*.ckpt"))
    key = tmp_path / "secret" / "key"
    key.parent.mkdir()
    preds = tmp_path / "preds.csv"
    assert predict_main([str(ckpt), str(cohort), "--out", str(preds), "--key-file", str(key)]) == 0
    onnx = tmp_path / "model.onnx"
    assert export_main([str(ckpt), "--out", str(onnx)]) == 0
    preds_onnx = tmp_path / "preds_onnx.csv"
    assert predict_main([str(onnx), str(cohort), "--onnx", "--out", str(preds_onnx),
                         "--key-file", str(key)]) == 0
    with preds.open() as f, preds_onnx.open() as g:
        a, b = list(csv.DictReader(f)), list(csv.DictReader(g))
    assert len(a) == len(b) == 40
    np.testing.assert_allclose([float(r["pred_age"]) for r in a],
                               [float(r["pred_age"]) for r in b], atol=0.01)
    # bf16-mixed training, float32 decoding: predictions are not on bf16's 0.25-year grid
    test_preds = [float(r["pred_age"]) for r in csv.DictReader((run / "predictions.csv").open())]
    assert max(abs(p * 4 - round(p * 4)) for p in test_preds) > 0.01


def test_gpu_check_runs_chosen_stages_and_projects_from_an_earlier_runs_figures(tmp_path):
    """A second GPU call can run only what is missing (``--stages``) and take stage b's
    figures from the first call's results.json (``--reuse``)."""
    earlier = tmp_path / "earlier.json"
    rates = zip(TABLE1_MODELS, (100, 200, 400, 50), strict=True)
    earlier.write_text(json.dumps([{"name": f"b {m} bf16+cl: training samples/s", "value": rate}
                                   for m, rate in rates]))
    out = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "bone_age.bench.gpu", "--out", str(out), "--dry-run"]
    proc = subprocess.run([*cmd, "--stages", "d,e", "--reuse", str(earlier)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads((out / "results.json").read_text())}
    assert not any(n.startswith(("env", "a ", "b ", "c ", "f ")) for n in results), results
    epoch = results["d paper-scale epoch (train + validation), median"]["value"]
    hours = results["e PROJECTION: Table 1, 60 runs, 100 epochs each, one GPU"]
    # each model's epoch scaled by multi_vgg16's rate over its own: 1 + 1/2 + 1/4 + 2
    assert hours["value"] == pytest.approx(epoch * 3.75 * 15 * 100 / 3600, rel=1e-3, abs=1e-4)
    assert "--reuse" in hours["note"]
    bad = subprocess.run([*cmd, "--stages", "d,x"], cwd=ROOT, capture_output=True, text=True)
    # (torch may warn on import about a missing CUDA runtime: the error is the last line)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("bone-age gpu-check: --stages: unknown")
