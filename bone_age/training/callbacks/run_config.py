"""RunConfig callback: the run's configuration, logged and kept where it is needed.

- every logger gets the resolved configuration (and the run identity, for W&B's runs table);
- the results get ``settings``: the keys that define the experiment, by which the report pools
  runs (the cohort named by its manifest's content, not its path);
- every checkpoint gets the run-metadata record (``bone_age.inference.run_metadata``) that
  inference, export and explain rebuild the model and its input pipeline from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from bone_age.evaluation.run_settings import SETTINGS_KEY, experiment_settings, recorded_settings
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata
from bone_age.training.results import FittedRun, ResultsCallback, RunResults


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class RunConfig(ResultsCallback):
    """Logs the resolved configuration, records the run's settings and writes the run-metadata
    record into checkpoints.

    Built with ``_recursive_: false`` so that the config sections arrive as config, not as the
    objects they describe. The module does not call ``save_hyperparameters``, hence this.

    Args:
        config: the sections of the run's configuration to log and record.
        run_info: the run's identity (model choice, backbone, loss, fold, seed, ...).
    """

    def __init__(self, config: DictConfig | dict, run_info: DictConfig | dict | None = None):
        # Read before resolving: values that merely repeat another setting are left out.
        self.settings = experiment_settings(config)
        self.config: dict = _plain(config)
        self.run_info: dict = _plain(run_info) or {}
        self._recorded: dict[str, Any] | None = None

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = {**self.config, "run": self.run_info}
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        dm = trainer.datamodule
        record = RunMetadata.build(
            model=self.config.get("model", {}), loss=pl_module.loss,
            preprocess=dm.cache.preprocess, normalize=dm.normalize, views=dm.view_names,
            run=self.run_info, training_data=training_summary(dm) if dm.splits else None,
        )
        checkpoint[METADATA_KEY] = record.to_dict()
        if self._recorded is None:
            self._recorded = recorded_settings(self.settings, dm.manifest_path())
        checkpoint[SETTINGS_KEY] = self._recorded

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        results.add({"settings": recorded_settings(self.settings, run.manifest)})


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
        # The baseline evaluation compares against: exactly the test fold's (metrics.json).
        "train_mean_age": dm.train_mean_age(), **dm.split_info(),
    }


def _is_phantom(dm) -> bool:
    """The built-in phantom, or a phantom cohort given as a manifest (it has phantom_info.json)."""
    return bool(dm.source.is_phantom)
