"""Shared by items 1 and 7: bone-age's model and LightningModule on preloaded batches."""

from __future__ import annotations

import copy
import logging
import time
import warnings
from functools import partial

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from bone_age.losses import MeanVarianceLoss
from bone_age.models import BoneAgeNet
from bone_age.training.module import BoneAgeModule

logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


def make_net(backbone: str = "resnet10t", seed: int = 0) -> BoneAgeNet:
    """The dual-input network with the mv loss's 41 outputs."""
    torch.manual_seed(seed)
    return BoneAgeNet(backbone=backbone, views=2, num_outputs=41)


def make_batches(n: int, batch: int, size: tuple[int, int], seed: int = 0) -> list[dict]:
    """``n`` preloaded, already normalised dict batches as the DataModule delivers them."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [{
        "image": torch.randn(batch, 2, 3, h, w, generator=g),
        "age": torch.randint(40, 81, (batch,), generator=g).float(),
        "sex": torch.randint(0, 2, (batch,), generator=g),
        "index": torch.arange(i * batch, (i + 1) * batch),
    } for i in range(n)]


def make_module(net: torch.nn.Module) -> BoneAgeModule:
    return BoneAgeModule(net=net, loss=MeanVarianceLoss(),
                         optimizer=partial(torch.optim.Adam, lr=1e-4), scheduler=None)


def trainer(steps: int, precision: str = "32-true", **kw) -> pl.Trainer:
    options = {"limit_val_batches": 0, **kw}
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=steps,
        num_sanity_val_steps=0, precision=precision, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        **options,
    )


def loader(batches: list[dict]) -> DataLoader:
    """A DataLoader over the preloaded dict batches (one batch per item, no collation)."""
    return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)


class StepClock(pl.Callback):
    """Wall time from the start of batch 1 to the end of the last batch: the steady-state steps
    (batch 0 and the Trainer's set-up and tear-down left out, as in ``hand_*(steady=True)``)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0

    def _start(self, batch_idx: int) -> None:
        if batch_idx == 1:
            self.start = time.perf_counter()

    def _end(self) -> None:
        self.end = time.perf_counter()

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start(batch_idx)

    def on_train_batch_end(self, *args) -> None:
        self._end()

    def on_validation_batch_start(self, trainer, module, batch, batch_idx, *args) -> None:
        self._start(batch_idx)

    def on_validation_batch_end(self, *args) -> None:
        self._end()

    @property
    def seconds(self) -> float:
        return self.end - self.start


def lightning_fit(module: BoneAgeModule, batches: list[dict], precision: str = "32-true",
                  steady: bool = False):
    """A callable that runs ``trainer.fit`` over ``batches`` (one fresh Trainer per call);
    ``steady``: it returns the seconds of batches 1.. only (see StepClock)."""
    def run() -> float | None:
        clock = StepClock()
        trainer(len(batches), precision, callbacks=[clock]).fit(
            module, train_dataloaders=loader(batches))
        return clock.seconds if steady else None
    return run


def lightning_validate(module: BoneAgeModule, batches: list[dict], steady: bool = False):
    def run() -> float | None:
        clock = StepClock()
        trainer(1, limit_val_batches=1.0, callbacks=[clock]).validate(
            module, dataloaders=loader(batches), verbose=False)
        return clock.seconds if steady else None
    return run


def _timed_from_batch_one(batches: list[dict], step) -> float:
    """Runs ``step`` on every batch; seconds from the start of batch 1 (batch 0 warms up)."""
    start = 0.0
    for i, b in enumerate(batches):
        if i == 1:
            start = time.perf_counter()
        step(b)
    return time.perf_counter() - start


def hand_fit(net: torch.nn.Module, batches: list[dict], steady: bool = False):
    """The minimal PyTorch loop: same model, loss, optimizer and tensors; ``steady``: returns
    the seconds of batches 1.. only."""
    loss_fn = MeanVarianceLoss()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step(b: dict) -> None:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(b["image"], b["sex"]), b["age"])
        loss.backward()
        opt.step()

    def run() -> float | None:
        net.train()
        seconds = _timed_from_batch_one(batches, step)
        return seconds if steady else None
    return run


def hand_validate(net: torch.nn.Module, batches: list[dict], steady: bool = False):
    loss_fn = MeanVarianceLoss()

    def step(b: dict) -> None:
        out = net(b["image"], b["sex"])
        loss_fn(out, b["age"])
        loss_fn.predict(out)

    @torch.no_grad()
    def run() -> float | None:
        net.eval()
        seconds = _timed_from_batch_one(batches, step)
        return seconds if steady else None
    return run


def twin(net: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(net)
