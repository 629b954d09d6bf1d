"""Stages c-e of the GPU check: the input pipeline, a paper-scale run and the Table 1 projection.

Everything goes through the real configuration (``conf/``), DataModule and ``train()``: the
phantom cohort at the paper's size, its cache, ``trainer=gpu`` with its fast path.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from bone_age.bench.gpu.sizes import TABLE1_MODELS, Sizes
from bone_age.bench.gpu.throughput import sync
from bone_age.utils.configs import CONF_DIR

TABLE1_LOSSES = 3
TABLE1_FOLDS = 5


def run_config(sizes: Sizes, workdir: Path, out: Path, overrides: list[str] = ()) -> DictConfig:
    """The composed configuration of a paper-scale multi_vgg16 + mv run writing into ``out``.

    The phantom and its cache live in ``workdir/data``, shared by every stage.
    """
    base = [f"paths.data_dir={workdir / 'data'}", "model=multi_vgg16", "loss=mv", "data.fold=0",
            f"data.subjects={sizes.subjects}", "data.progress=false", "logger=csv",
            "callbacks.early_stopping=null", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false"]
    if sizes.dry_run:
        base += ["trainer=cpu", f"model.backbone={sizes.backbone}", "data.image_size=[32,16]",
                 f"data.batch_size={sizes.batch}", "data.cache_workers=0", "trainer.max_epochs=1"]
    else:
        base += ["trainer=gpu"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*base, *overrides], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
        cfg.hydra.runtime.cwd = str(workdir)
        cfg.hydra.runtime.choices.model = "multi_vgg16"
    HydraConfig.instance().set_config(cfg)
    cfg.paths.output_dir = str(out)
    return cfg


def build_cohort(cfg: DictConfig) -> tuple[pl.LightningDataModule, dict[str, float]]:
    """The phantom cohort and its cache, timed apart; returns the set-up DataModule."""
    from bone_age.data.manifest import read_manifest

    dm = instantiate(cfg.data)
    t0 = time.perf_counter()
    manifest = dm.manifest_path(generate=True)
    t1 = time.perf_counter()
    studies, _ = read_manifest(manifest)
    dm.cache.build(studies, dm.cache_workers, False)
    t2 = time.perf_counter()
    dm.setup("fit")
    return dm, {"phantom_s": t1 - t0, "cache_s": t2 - t1, "subjects": len(studies)}


class _Clock(pl.Callback):
    """Seconds of training batches ``first``.. (device synchronised at both ends)."""

    def __init__(self, first: int) -> None:
        self.first, self.start, self.end, self.batches = first, 0.0, 0.0, 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if batch_idx == self.first:
            sync(module.device.type)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if batch_idx >= self.first:
            sync(module.device.type)
            self.end, self.batches = time.perf_counter(), self.batches + 1


def _fit_batches(module, loader_or_dm, sizes: Sizes, steps: int, first: int) -> float:
    clock = _Clock(first)
    trainer = pl.Trainer(
        accelerator="gpu" if sizes.device == "cuda" else "cpu", devices=1,
        precision="32-true" if sizes.dry_run else "bf16-mixed", max_epochs=1,
        limit_train_batches=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[clock])
    if isinstance(loader_or_dm, pl.LightningDataModule):
        trainer.fit(module, datamodule=loader_or_dm)
    else:
        trainer.fit(module, train_dataloaders=loader_or_dm)
    return (clock.end - clock.start) / max(1, clock.batches)


def input_pipeline(cfg: DictConfig, dm, sizes: Sizes) -> dict[str, Any]:
    """Fraction of the step time the GPU waits for data (stage c).

    The same module trains (1) from the DataModule (cache -> loader workers -> pinned copy ->
    on-device augmentation and normalisation) and (2) from the same batches already prepared
    on the device; the wait is 1 - (2) / (1), both timed from batch ``first`` on so that the
    loader's prefetched start does not flatter it.
    """
    steps, first = (4, 1) if sizes.dry_run else (60, 20)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    if cfg.speed.channels_last:
        net.to(memory_format=torch.channels_last)
    # No scheduler: these fits have no validation for it to monitor.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss, scheduler=None)
    full = _fit_batches(module, dm, sizes, steps, first)
    # The same batches, augmented and normalised once, resident on the device.
    device = torch.device(sizes.device)
    normalize = dm.normalize.to(device)
    ready = []
    for i, batch in enumerate(dm.loader("train")):
        if i == steps:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["image"] = normalize(dm.augment(batch["image"]))
        ready.append(batch)
    loader = torch.utils.data.DataLoader(ready, batch_size=None, shuffle=False)
    compute = _fit_batches(module, loader, sizes, steps, first)
    return {"step_s_full": full, "step_s_compute": compute,
            "wait_fraction": max(0.0, 1.0 - compute / full), "workers": dm.num_workers,
            "batch": dm.batch_size, "samples_per_s_full": dm.batch_size / full}


class EpochLog(pl.Callback):
    """Seconds and validation MAE of every epoch, written to ``path`` as it goes."""

    def __init__(self, path: str) -> None:
        self.path, self.rows, self._t0 = Path(path), [], 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
        mae = trainer.callback_metrics.get("val/mae")
        self.rows.append({"epoch": trainer.current_epoch,
                          "seconds": time.perf_counter() - self._t0,
                          "val_mae": None if mae is None else float(mae)})
        self.path.write_text(json.dumps(self.rows))


def paper_run(sizes: Sizes, workdir: Path, train_seconds: float) -> dict[str, Any]:
    """multi_vgg16 + mv on fold 0 at the paper's settings for a fixed time budget (stage d)."""
    from bone_age.training.train import train

    out = workdir / "paper_run"
    log = workdir / "epochs.json"
    minutes, seconds = divmod(int(train_seconds), 60)
    limit = f"+trainer.max_time='00:00:{minutes:02d}:{seconds:02d}'"  # DD:HH:MM:SS
    cfg = run_config(sizes, workdir, out, [limit])
    with open_dict(cfg):
        cfg.callbacks.epoch_log = {"_target_": f"{__name__}.EpochLog", "path": str(log)}
    if sizes.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    metrics = train(cfg).metrics
    wall = time.perf_counter() - t0
    epochs = json.loads(log.read_text()) if log.exists() else []
    times = sorted(e["seconds"] for e in epochs[1:] or epochs)  # epoch 0 pays the warm-up
    maes = [e["val_mae"] for e in epochs if e["val_mae"] is not None]
    return {
        "epochs": len(epochs), "epoch_s": times[len(times) // 2] if times else None,
        "first_epoch_s": epochs[0]["seconds"] if epochs else None,
        "best_val_mae": min(maes) if maes else None, "test_mae": metrics.get("mae"),
        "wall_s": wall, "n_train": metrics.get("n_train"), "n_val": metrics.get("n_val"),
        "gpu_peak_gib": (torch.cuda.max_memory_allocated() / 2**30
                         if sizes.device == "cuda" else None),
        "precision": str(cfg.trainer.precision),
    }


def projection(epoch_s: float, samples_per_s: dict[str, float], epochs: int) -> dict[str, Any]:
    """Hours for Table 1 (4 models x 3 losses x 5 folds) on one GPU, one run at a time.

    Each model's epoch time is the measured multi_vgg16 epoch scaled by the ratio of training
    throughputs (samples/s, stage b, bf16 + channels-last); ``epochs`` per run is an assumption.
    """
    ref = samples_per_s["multi_vgg16"]
    per_model = {m: epoch_s * ref / samples_per_s[m] for m in TABLE1_MODELS}
    seconds = sum(per_model.values()) * TABLE1_LOSSES * TABLE1_FOLDS * epochs
    return {"hours": seconds / 3600, "epochs_per_run": epochs, "epoch_s": per_model,
            "runs": len(TABLE1_MODELS) * TABLE1_LOSSES * TABLE1_FOLDS}
