"""One run: compose the objects from config, fit on the training folds, test the held-out fold."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list:
    """Objects of a config group whose entries may be null (switched off)."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def train(cfg: DictConfig) -> dict:
    """Fit and test one model on one fold; returns the run's test metrics."""
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    net = instantiate(cfg.model, num_outputs=loss.num_outputs)
    # Built as a partial: Hydra would turn the (dataclass) loss passed as an argument into a config.
    module = instantiate(cfg.module, _partial_=True)(net=net, loss=loss)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    trainer.fit(module, datamodule=datamodule)
    ckpt = cfg.get("test_ckpt", "best")
    if ckpt == "best" and not getattr(trainer.checkpoint_callback, "best_model_path", ""):
        ckpt = None  # no checkpoint callback: test the weights as they are
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt)
    results = next((c for c in callbacks if hasattr(c, "metrics")), None)
    return results.metrics if results is not None else {}
