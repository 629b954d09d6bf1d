"""Item 2: input pipeline. Training samples/s per core from the cache vs model consumption."""

from __future__ import annotations

from pathlib import Path

import torch

from bone_age.bench import training as T
from bone_age.bench.common import Ctx, entry, interleave, paired_ratio, rate
from bone_age.data.datamodule import BoneAgeDataModule
from bone_age.data.preprocess import Preprocess
from bone_age.data.sources import ManifestSource
from bone_age.data.transforms import BatchAugment


def datamodule(manifest: Path, cache: Path, size: tuple[int, int], batch: int,
               workers: int = 0) -> BoneAgeDataModule:
    dm = BoneAgeDataModule(ManifestSource(str(manifest)), Preprocess(size), cache_dir=str(cache),
                           augment=BatchAugment(), batch_size=batch, num_workers=workers,
                           cache_workers=0, progress=False, num_folds=2)
    dm.setup("fit")
    return dm


def run(ctx: Ctx) -> list[dict]:
    size = (32, 16) if ctx.quick else (224, 224)
    batch = 4 if ctx.quick else 16
    backbone = "test_resnet" if ctx.quick else "vgg16"
    dm = datamodule(ctx.cohort(), ctx.workdir / "cache", size, batch)
    train = dm.train_dataloader()
    epochs = max(1, 128 // (len(train) * batch))  # >= 128 samples per repeat
    samples = epochs * len(train) * batch
    gen = torch.Generator()

    def loader() -> None:
        # what the training DataLoader (the CPU side) delivers: cache reads + collation
        for _ in range(epochs):
            for _b in train:
                pass

    def pipeline() -> None:
        # what the DataModule does: load from the cache, then on_after_batch_transfer
        for _ in range(epochs):
            for b in train:
                gen.manual_seed(0)
                dm.normalize(dm.augment(b["image"], gen))

    model_batch = 2 if ctx.quick else 4
    net = T.make_net(backbone)
    step = T.hand_fit(net, T.make_batches(1, model_batch, size))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per-core figures: both sides on one thread
    try:
        times = interleave({"loader": loader, "pipeline": pipeline, "model": step},
                           max(2, ctx.repeats - 2))
    finally:
        torch.set_num_threads(threads)
    delivered, delivered_spread = rate(samples, times["loader"])
    pipe, pipe_spread = rate(samples, times["pipeline"])
    model, model_spread = rate(model_batch, times["model"])
    ratio, spread = paired_ratio([samples / t for t in times["pipeline"]],
                                 [model_batch / t for t in times["model"]])
    n = len(times["model"])
    source = (f"{size[0]}x{size[1]} dual-view, from the .npy cache via the DataModule's training "
              f"DataLoader (num_workers=0, batch {batch}), one torch thread (= one core)")
    return [
        entry("2 input pipeline: training DataLoader delivery (cache read + collate)",
              delivered, "samples/s/core", 1000, ">=", spread=delivered_spread, repeats=n,
              note=(f"{source}. The loader does no augmentation by design: augmentation and "
                    "normalisation run on whole batches on the training device "
                    "(on_after_batch_transfer), i.e. on the GPU where there is one")),
        entry("2 input pipeline incl. augmentation + normalisation run on this CPU",
              pipe, "samples/s/core", 1000, ">=", spread=pipe_spread, repeats=n,
              note=(f"{source} + BatchAugment + CountNormalize as on_after_batch_transfer "
                    "applies them on a CPU-only machine (see results.md for where the time goes)")),
        entry(f"2 model consumption ({backbone} dual-input training): samples/s per core",
              model, "samples/s/core", spread=model_spread, repeats=n,
              note=f"training step (forward + backward + Adam), batch {model_batch}, "
                   f"{size[0]}x{size[1]}, one torch thread"),
        entry("2 input pipeline incl. augmentation on CPU / model consumption", ratio, "ratio",
              10, ">=", spread=spread, repeats=n, note="paired per repeat, both on one core"),
    ]
