"""Lightning callbacks of a run: its results files and figures, and its configuration.

- ``ResultsWriter`` writes metrics.json, predictions.csv, excluded.csv, history.csv and the
  figures into the run directory (and sends them to W&B when that logger is used).
- ``RunConfig`` logs the resolved run configuration through every logger, records the settings
  that define the experiment (``metrics.json`` ``settings``, by which the report pools runs),
  and stores what inference needs (model, loss and preprocessing settings, a training data
  summary) in each checkpoint as plain values, so that ``torch.load(..., weights_only=True)``
  can rebuild it.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from bone_age import plots
from bone_age.data.cache import file_digest
from bone_age.metrics import age_metrics, baseline_mae, exact
from bone_age.models import count_parameters
from bone_age.report import experiment_settings
from bone_age.tracking import log_run_results, wandb_loggers

log = logging.getLogger(__name__)

HISTORY_KEYS = ("train/loss", "val/loss", "val/mae")
PREDICTION_COLUMNS = ["subject_id", "fold", "sex", "age", "pred_age", "pred_sd"]
METADATA_KEY = "bone_age"  # the checkpoint entry read by bone_age.inference
METADATA_VERSION = 1


class ResultsWriter(pl.Callback):
    """Writes the run's result files and figures into ``output_dir``.

    Only rank 0 writes; the module has gathered the test predictions of all ranks already.
    Epoch metrics are collected here rather than read back from a logger, so the learning
    curves exist whichever logger (or none) is configured. Patient identity never reaches these
    files: subjects appear by their manifest pseudonym.
    """

    def __init__(self, output_dir: str, run_info: dict | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.run_info = dict(run_info or {})
        self._fit_start: float | None = None
        self.train_seconds = 0.0
        self.metrics: dict = {}
        self.history: list[dict[str, float]] = []

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Runs after the epoch's validation, so both losses of the epoch are in callback_metrics.
        found = {k: float(trainer.callback_metrics[k]) for k in HISTORY_KEYS
                 if k in trainer.callback_metrics}
        if found:
            self.history.append({"epoch": trainer.current_epoch, **found})

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._fit_start is not None:
            self.train_seconds = time.perf_counter() - self._fit_start

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        preds = {k: v.numpy() for k, v in pl_module.test_predictions.items()}
        # The figures are computed in float64 from exactly the values predictions.csv holds: the
        # manifest's ages (not their float32 batch copies) and the predictions as predicted.
        age = dm.ages_of(preds["index"])
        pred = preds["pred_age"].astype(np.float64)
        train_mean = float(np.mean(dm.ages("train")))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = {
            **self.run_info,
            "n_train": len(dm.splits["train"]),
            "n_val": len(dm.splits["val"]),
            "n_test": len(age),
            **age_metrics(pred, age),
            "train_mean_age": train_mean,
            "baseline_mae": baseline_mae(age, train_mean),
            "num_params": count_parameters(pl_module.net),
            "best_epoch": int(pl_module.best_epoch),
            "epochs": int(trainer.current_epoch),
            "train_seconds": round(self.train_seconds, 1),
            "n_excluded": len(dm.problems),
        }
        settings = next((dict(c.settings) for c in trainer.callbacks if isinstance(c, RunConfig)),
                        None)
        if settings is not None:
            # The cohort by its manifest's content, not by where the file lies.
            if settings.get("data.manifest"):
                settings["data.manifest"] = "blake2b:" + file_digest(dm.manifest_path())
            self.metrics["settings"] = settings  # what bone_age.report pools runs by
        with (self.output_dir / "metrics.json").open("w") as f:
            json.dump(self.metrics, f, indent=2)
        rows = self._prediction_rows(dm, preds)
        self._write_csv("predictions.csv", PREDICTION_COLUMNS, rows)
        self._write_csv("history.csv", ["epoch", *HISTORY_KEYS],
                        [[h.get(k, "") for k in ("epoch", *HISTORY_KEYS)] for h in self.history])
        self._write_csv("excluded.csv", ["source", "row", "subject_id", "status", "reason"],
                        [[p.source, p.row, p.subject_id, p.status, p.reason]
                         for p in dm.problems])
        sex = [dm.studies[int(i)].sex for i in preds["index"]]
        figures = self.write_figures(age, pred, sex)
        for logger in wandb_loggers(trainer.loggers):
            log_run_results(logger, self.metrics, PREDICTION_COLUMNS, rows, figures)

    def write_figures(self, age: np.ndarray, pred: np.ndarray, sex: list[str]) -> dict[str, Path]:
        info = self.run_info
        # The trunk is named too: "multi_vgg16" with a resnet10t trunk is not the paper's VGG16.
        title = (f"{info.get('model', '')} [{info.get('backbone', '')}] + {info.get('loss', '')}, "
                 f"fold {info.get('fold', '')}")
        out = self.output_dir
        figures = {
            "scatter": plots.scatter_plot(age, pred, out / "scatter.png", title,
                                          self.metrics["mae"]),
            "bland_altman": plots.bland_altman_plot(age, pred, out / "bland_altman.png",
                                                    f"Bland-Altman, {title}"),
            "error_by_group": plots.error_by_group_plot(age, pred, sex, out / "error_by_group.png",
                                                        f"Error by age band and sex, {title}"),
        }
        if self.history:
            figures["learning_curves"] = plots.learning_curves_plot(
                self.history, out / "learning_curves.png", f"Learning curves, {title}")
        return figures

    def _prediction_rows(self, dm, preds: dict[str, np.ndarray]) -> list[list[Any]]:
        rows = []
        for i, index in enumerate(preds["index"]):
            study = dm.studies[int(index)]
            sd = preds["pred_sd"][i]
            rows.append([study.subject_id, self.run_info.get("fold", dm.fold), study.sex,
                         exact(study.age), exact(preds["pred_age"][i]),
                         "" if math.isnan(sd) else exact(sd)])
        return rows

    def _write_csv(self, name: str, header: list[str], rows: list[list[Any]]) -> None:
        with (self.output_dir / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class RunConfig(pl.Callback):
    """Logs the resolved configuration and writes inference metadata into checkpoints.

    Built with ``_recursive_: false`` so that the config sections arrive as config, not as the
    objects they describe. The module does not call ``save_hyperparameters``, hence this.
    """

    def __init__(self, config: DictConfig | dict, run_info: DictConfig | dict | None = None):
        # Read before resolving: values that merely repeat another setting are left out.
        self.settings = experiment_settings(config)
        self.config: dict = _plain(config)
        self.run_info: dict = _plain(run_info) or {}

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # ``run`` (model choice, backbone, loss, fold) lets the W&B runs table group runs into
        # the Table 1 grid.
        params = {**self.config, "run": self.run_info}
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[METADATA_KEY] = checkpoint_metadata(
            self.config.get("model", {}), pl_module, trainer.datamodule, self.run_info
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # One W&B run per job: a multirun's jobs share the process, so close it after testing.
        if stage == "test" and wandb_loggers(trainer.loggers):
            import wandb

            wandb.finish()


def checkpoint_metadata(
    model_cfg: dict, pl_module: pl.LightningModule, dm, run_info: dict
) -> dict[str, Any]:
    """Everything inference needs besides the weights, as primitives (weights_only-loadable).

    Preprocessing is read off the data module's own objects, so it is what training used.
    """
    model_kwargs = {k: v for k, v in model_cfg.items() if not k.startswith("_")}
    # The state dict carries the trained weights: never fetch ImageNet weights to rebuild.
    model_kwargs.update(pretrained=False, weights=None, num_outputs=pl_module.loss.num_outputs)
    preprocess = dm.cache.preprocess
    meta = {
        "version": METADATA_VERSION,
        "run": {k: v for k, v in run_info.items() if isinstance(v, (str, int, float, bool))},
        "model": model_kwargs,
        "loss": asdict(pl_module.loss),
        "data": {
            "views": list(dm.view_names),
            "image_size": list(preprocess.image_size),
            "resize": preprocess.resize,
            "mirror_posterior": bool(preprocess.mirror_posterior),
            "normalize": dm.normalize.method,
            "percentile": float(dm.normalize.q * 100.0),
        },
    }
    if dm.splits:
        meta["training_data"] = training_summary(dm)
    return meta


def training_summary(dm) -> dict[str, Any]:
    """Counts, age range and sex ratio of the subjects the model was fitted on (no identities)."""
    fit = [dm.studies[int(i)] for split in ("train", "val") for i in dm.splits[split]]
    ages = np.array([s.age for s in fit], dtype=float)
    return {
        "n_train": len(dm.splits["train"]), "n_val": len(dm.splits["val"]),
        "n_test": len(dm.splits.get("test", [])), "n_excluded": len(dm.problems),
        "age_min": float(ages.min()), "age_max": float(ages.max()),
        "age_mean": float(ages.mean()), "age_sd": float(ages.std(ddof=1)) if len(ages) > 1
        else 0.0,
        "n_female": sum(s.sex == "F" for s in fit), "n_male": sum(s.sex == "M" for s in fit),
        "source": "phantom" if _is_phantom(dm) else "manifest",
        "fold": int(dm.fold), "num_folds": int(dm.num_folds),
    }


def _is_phantom(dm) -> bool:
    """The built-in phantom, or a phantom cohort given as a manifest (it has phantom_info.json)."""
    return dm.manifest is None or (Path(dm.manifest).parent / "phantom_info.json").is_file()
