"""Results writer: calibration of the predicted age distributions and the age gap.

Computed from the run's one evaluation pass (``bone_age.evaluation.fold_outputs``): the raw
outputs (logits for temperature scaling and distribution quantiles) and decoded ages of the
inner-validation and test splits; the network is not run again. Everything fitted (temperature,
gap correction) sees inner-validation data only; test labels are used only to score. Writes
``calibration.json``, ``age_gap.csv`` and ``reliability.png`` and adds the headline numbers to
the run's results (``metrics.json``).

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
import torch

from bone_age.evaluation import calibration as cal
from bone_age.evaluation.fold_outputs import FoldEvaluation
from bone_age.evaluation.plots import reliability_plot
from bone_age.evaluation.results import write_gaps
from bone_age.inference.checkpoint import CheckpointError, read_checkpoint
from bone_age.inference.run_metadata import METADATA_KEY, RunMetadata
from bone_age.training.run_results import FittedRun, RunResults
from bone_age.utils.outputs import write_atomic

log = logging.getLogger(__name__)


class CalibrationWriter:
    """Coverage of the nominal intervals, reliability plot, temperature, age gaps.

    Args:
        output_dir: the run's folder (its ``checkpoints/`` receive the fitted calibration).
        temperature: also fit a temperature for the predicted distributions.
    """

    def __init__(self, output_dir: str, temperature: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.temperature = temperature
        self.summary: dict[str, Any] = {}
        self.calibration: cal.Calibration | None = None

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        test = run.evaluation.test
        self.summary, gaps = self.evaluate(run.evaluation)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "calibration.json").write_text(json.dumps(self.summary, indent=2))
        write_gaps(self.output_dir / "age_gap.csv", test.subject_id, test.sex, test.age, gaps)
        if "reliability" in self.summary:
            results.figures["reliability"] = reliability_plot(
                self.summary["reliability"], self.output_dir / "reliability.png")
        results.add(self.headline())
        if run.tested_checkpoint is not None:
            self._record(run.tested_checkpoint)

    def evaluate(self, evaluation: FoldEvaluation) -> tuple[dict, dict[str, np.ndarray]]:
        """All numbers of the run, and the per-study gaps of the test split.

        Fits the calibration on the inner-validation split (kept in ``self.calibration``) and
        scores the test split, both from the evaluation pass's decoded ages and raw outputs.
        """
        loss, val, test = evaluation.loss, evaluation.val, evaluation.test
        self.calibration = cal.fit_calibration(loss, val.age, val.pred_age, val.outputs,
                                               self.temperature)
        summary, per_study, _ = cal.calibration_summary(loss, test.age, test.pred_age,
                                                        test.outputs, self.calibration)
        return summary, per_study

    def headline(self) -> dict[str, Any]:
        """The summary's numbers for metrics.json (coverage keys prefixed ``calib_``)."""
        return cal.headline(self.summary)

    def _record(self, tested: Path) -> None:
        """Write the fitted calibration into each checkpoint of the run holding the tested
        weights (the tested one, and last.ckpt when it is the same epoch), atomically.

        Only inside this run's ``checkpoints/`` folder: a run writes no file of another."""
        if self.calibration is None:
            return
        folder = (self.output_dir / "checkpoints").resolve()
        if tested.resolve().parent != folder:
            log.warning("calibration not recorded: the tested checkpoint %s is not in this "
                        "run's folder %s", tested, folder)
            return
        try:
            weights = read_checkpoint(tested).get("state_dict", {})
        except CheckpointError as err:
            log.warning("calibration not recorded: %s", err)
            return
        for path in dict.fromkeys([tested, *sorted(tested.parent.glob("*.ckpt"))]):
            if path.is_symlink():  # its target may lie anywhere
                continue
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
            write_atomic(path, lambda tmp, ckpt=ckpt: torch.save(ckpt, tmp), keep_suffix=False)
