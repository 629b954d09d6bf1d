"""RunConfig callback: the run's configuration, logged and kept where it is needed.

- every logger gets the resolved configuration (and the run identity, for W&B's runs table);
- every checkpoint gets the run-metadata record (``bone_age.inference.run_metadata``) that
  inference, export and explain rebuild the model and its input pipeline from, and the run's
  settings: the keys that define the experiment (the cohort named by its manifest's content, not
  its path), which a resume compares with its command's; the results writer
  ``SettingsWriter`` puts the same settings in ``metrics.json``, by which the report pools runs.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from bone_age.evaluation.run_settings import SETTINGS_KEY, experiment_settings, recorded_settings
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class RunConfig(pl.Callback):
    """Logs the resolved configuration and writes the run-metadata record and the run's settings
    into checkpoints.

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
            run=self.run_info, training_data=dm.facts.training_summary() if dm.splits else None,
        )
        checkpoint[METADATA_KEY] = record.to_dict()
        if self._recorded is None:
            self._recorded = recorded_settings(self.settings, dm.manifest_path())
        checkpoint[SETTINGS_KEY] = self._recorded
