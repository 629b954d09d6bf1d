"""Results callback: calibration of the predicted age distributions and the age gap.

After testing, the tested weights are run once more over the inner-validation and test splits
(raw outputs are needed: logits for temperature scaling and distribution quantiles). Everything
fitted (temperature, gap correction) sees inner-validation data only; test labels are used
only to score. Writes ``calibration.json``, ``age_gap.csv`` and ``reliability.png`` and adds
the headline numbers to the run's results (``metrics.json``).

What was fitted travels with the model: it is written into the run-metadata record (section
``calibration``) of every checkpoint of the run that holds the tested weights, so that
``python -m bone_age.evaluate`` (and an exported ONNX model) scores any cohort with it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from bone_age.evaluation import calibration as cal
from bone_age.evaluation.plots import reliability_plot
from bone_age.evaluation.results import write_gaps
from bone_age.inference.checkpoint import CheckpointError, read_checkpoint
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata
from bone_age.losses import AgeLoss
from bone_age.training.results import ResultsCallback, RunResults
from bone_age.utils.outputs import write_atomic

log = logging.getLogger(__name__)


class CalibrationWriter(ResultsCallback):
    """Coverage of the nominal intervals, reliability plot, temperature, age gaps."""

    def __init__(self, output_dir: str, temperature: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.temperature = temperature
        self.summary: dict[str, Any] = {}
        self.calibration: cal.Calibration | None = None

    def add_results(self, results: RunResults, trainer: pl.Trainer,
                    pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        hook = dm.on_after_batch_transfer
        # Plain loaders (no distributed sampler): rank 0 sees every study of both splits.
        val = {k: v.numpy() for k, v in
               pl_module.predict_outputs(dm.loader("val"), hook).items()}
        test = {k: v.numpy() for k, v in
                pl_module.predict_outputs(dm.loader("test"), hook).items()}
        for part in (val, test):  # the manifest's float64 ages, as in predictions.csv
            part["age"] = dm.ages_of(part["index"])
        self.summary = self.evaluate(pl_module.loss, val, test)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "calibration.json").write_text(json.dumps(self.summary, indent=2))
        studies = [dm.studies[int(i)] for i in test["index"]]
        write_gaps(self.output_dir / "age_gap.csv", [s.subject_id for s in studies],
                   [s.sex for s in studies], test["age"], test)
        if "reliability" in self.summary:
            results.figures["reliability"] = reliability_plot(
                self.summary["reliability"], self.output_dir / "reliability.png")
        results.add(self.headline())
        self._record(trainer, pl_module)

    def evaluate(
        self, loss: AgeLoss, val: dict[str, np.ndarray], test: dict[str, np.ndarray]
    ) -> dict:
        """All numbers of the run; ``val``/``test`` hold raw ``outputs``, ``age``, ``index``.

        Fits the calibration on ``val`` (kept in ``self.calibration``) and scores ``test``;
        ``test`` gains ``pred_age``, ``gap`` and ``gap_corrected``.
        """
        self.calibration = cal.fit_calibration(loss, val["age"], val["outputs"],
                                               self.temperature)
        test_pred, _ = cal.decode(loss, test["outputs"])
        summary, per_study, _ = cal.calibration_summary(loss, test["age"], test_pred,
                                                        test["outputs"], self.calibration)
        test.update(per_study)
        return summary

    def headline(self) -> dict[str, Any]:
        """The summary's numbers for metrics.json (coverage keys prefixed ``calib_``)."""
        return cal.headline(self.summary)

    def _record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write the fitted calibration into each checkpoint of the run holding the tested
        weights (the tested one, and last.ckpt when it is the same epoch), atomically."""
        tested = getattr(trainer, "ckpt_path", None)
        if not tested or self.calibration is None:
            return  # the weights as they were after fitting: no checkpoint holds them
        tested = Path(tested)
        weights = {k: v.detach().cpu() for k, v in pl_module.state_dict().items()}
        for path in dict.fromkeys([tested, *sorted(tested.parent.glob("*.ckpt"))]):
            try:
                ckpt = read_checkpoint(path)
            except CheckpointError as err:
                log.warning("calibration not recorded in %s: %s", path, err)
                continue
            state = ckpt.get("state_dict", {})
            same = state.keys() == weights.keys() and all(
                torch.equal(state[k], weights[k]) for k in weights)
            if not same or METADATA_KEY not in ckpt:
                continue
            record = RunMetadata(ckpt[METADATA_KEY], str(path)).with_calibration(
                self.calibration.to_dict())
            ckpt[METADATA_KEY] = record.to_dict()
            write_atomic(path, lambda tmp, ckpt=ckpt: torch.save(ckpt, tmp))

