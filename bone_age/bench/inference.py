"""Item 4: inference. ``bone_age.predict`` vs a bare forward; ONNX Runtime vs eager PyTorch."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import numpy as np
import torch

from bone_age.bench import training as T
from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate
from bone_age.data.preprocess import Preprocess
from bone_age.data.transforms import CountNormalize
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata
from bone_age.losses import MeanVarianceLoss


def make_checkpoint(path: Path, backbone: str, size: tuple[int, int]) -> Path:
    """A checkpoint as training writes it: ``net.*`` weights + the ``bone_age`` settings."""
    net = T.make_net(backbone)
    record = RunMetadata.build(
        model={"backbone": backbone, "views": 2}, loss=MeanVarianceLoss(),
        preprocess=Preprocess(size, "stretch", True), normalize=CountNormalize("percentile", 99.0),
        views=("anterior", "posterior"),
        run={"model": "multi_vgg16", "backbone": backbone, "loss": "mv"})
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, METADATA_KEY: record.to_dict()}, path)
    return path


def run(ctx: Ctx) -> list[dict]:
    from bone_age.inference.predict import from_manifest, predict
    from bone_age.inference.predictor import OnnxPredictor, TorchPredictor

    backbone, size = ("test_resnet", (32, 16)) if ctx.quick else ("resnet10t", (128, 64))
    ckpt = make_checkpoint(ctx.workdir / "bench.ckpt", backbone, size)
    torch_pred = TorchPredictor(ckpt)
    items, _ = from_manifest(ctx.cohort())
    # 4 passes over 32 studies: a run of 128, so that filling the decode pipeline (the first
    # batch, which nothing can overlap) weighs as it does in real use, not half the total.
    items = items[: 8 if ctx.quick else 32] * (1 if ctx.quick else 4)
    counts = np.stack([torch_pred.spec.counts(i.files) for i in items]).astype(np.float32)
    sex = np.array([float(i.sex == "M") for i in items], dtype=np.float32)
    batch = 16

    def api() -> None:
        predict(torch_pred, items, batch_size=batch, progress=False)

    @torch.no_grad()
    def bare() -> None:
        for i in range(0, len(counts), batch):
            x = torch.from_numpy(counts[i:i + batch])
            torch_pred.net(torch_pred.normalize(x))

    what = f"dual-input {backbone} at {size[0]}x{size[1]} (the CPU recipe's model), batch {batch}"
    out = []
    default_threads = torch.get_num_threads()
    for threads in sorted({1, default_threads}, reverse=True):
        torch.set_num_threads(threads)
        try:
            times = interleave({"predict": api, "bare": bare}, ctx.repeats)
        finally:
            torch.set_num_threads(default_threads)
        ratio, spread = paired_ratio(times["bare"], times["predict"])
        api_rate, _ = rate(len(items), times["predict"])
        bare_rate, _ = rate(len(items), times["bare"])
        how = ("a spare core: predict decodes in a thread ahead of the model" if threads == 1
               and (os.cpu_count() or 1) > 1 else "no spare core: predict decodes in turn")
        out.append(entry(
            f"4 inference: bone_age.predict / bare forward (studies/s), {threads} torch "
            f"thread{'s' if threads > 1 else ''}", ratio, "ratio", 0.9, ">=", spread=spread,
            repeats=ctx.repeats,
            note=(f"{what}; {how}; predict() on {len(items)} studies (DICOM files in the page "
                  f"cache, every study decoded) {api_rate:.1f} studies/s vs normalise + forward "
                  f"on preloaded count tensors {bare_rate:.1f} studies/s"),
            torch_threads=threads, predict_studies_per_s=api_rate, bare_studies_per_s=bare_rate))
    try:
        from bone_age.inference.export import export

        onnx_pred = OnnxPredictor(export(ckpt, ctx.workdir / "bench.onnx"))
        feeds = [(counts[i:i + batch], sex[i:i + batch]) for i in range(0, len(counts), batch)]
        times = interleave({
            "onnx": lambda: [onnx_pred(c, s) for c, s in feeds],
            "eager": lambda: [torch_pred(c, s) for c, s in feeds],
        }, ctx.repeats)
        ratio, spread = paired_ratio(times["eager"], times["onnx"])
        out.append(entry("4 inference: ONNX Runtime / eager PyTorch (studies/s)", ratio, "ratio",
                         spread=spread, repeats=ctx.repeats,
                         note=(f"{what}; exported graph (normalisation inside) vs TorchPredictor "
                               f"on the same preloaded counts; CPUExecutionProvider defaults")))
    except Exception as err:  # export needs onnx + onnxscript; record why it failed
        traceback.print_exc()
        out.append(entry("4 inference: ONNX Runtime / eager PyTorch (studies/s)", None, "ratio",
                         note=f"export failed: {type(err).__name__}: {str(err)[:300]}"))
    return out
