"""``python -m bone_age.evaluate MODEL COHORT --out DIR``: a trained model's figures on a cohort.

COHORT is what ``python -m bone_age.predict`` takes (a manifest, a DICOM folder indexed with the
pseudonym key, or one DICOM file), read by predict's own input handling. DIR receives the same
files a training run writes for its test fold, for the whole cohort: ``metrics.json`` (n, MAE
(SD), r, the baseline of always predicting the training split's mean age, the age gap and its
bias correction fitted on the run's inner validation, interval coverage), ``predictions.csv``,
``calibration.json``, ``age_gap.csv``, scatter, Bland-Altman, error by age band and sex and the
reliability plot. Everything the model was trained with comes from its run-metadata record
(``training_data.train_mean_age``, ``calibration``): nothing is fitted on the evaluated cohort.

Studies without an age, or with one outside the model's class range (as training leaves them
out), are predicted (``predictions.csv``) but not scored; their counts are in ``metrics.json``.
A figure the model file cannot give (an older checkpoint without the fitted calibration, an
ONNX model exported without raw outputs) is named in one line and left out. ``--onnx`` runs an
exported model (a ``.onnx`` MODEL implies it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.data.labels import trainable_age
from bone_age.evaluation import calibration as cal
from bone_age.evaluation.plots import reliability_plot
from bone_age.evaluation.results import (
    accuracy,
    figure_title,
    prediction_table,
    write_csv,
    write_figures,
    write_gaps,
)
from bone_age.inference.predict import (
    Predicted,
    add_model_and_input,
    check_outside_inputs,
    load_predictor,
    model_and_input,
    nothing_predicted,
    predict_studies,
    read_input,
    write_refusals,
)
from bone_age.inference.run_metadata import RunMetadata
from bone_age.utils.arguments import ArgumentParser
from bone_age.utils.console import plural
from bone_age.utils.errors import EXIT_OK, EXIT_PARTIAL, BoneAgeError, command
from bone_age.utils.outputs import (
    OutputError,
    check_not_input,
    check_output_dir,
    check_replaceable,
    replace,
    temp_path,
    write_text_atomic,
)

KIND = "evaluation"  # metrics.json "kind": the report leaves evaluations out of Table 1
OUTPUTS = ("metrics.json", "predictions.csv", "calibration.json", "age_gap.csv", "scatter.png",
           "bland_altman.png", "error_by_group.png", "reliability.png")


class EvaluationError(BoneAgeError, ValueError):
    """The cohort gives nothing to score (message says why)."""


def score(spec: RunMetadata, done: list[Predicted], out: Path) -> tuple[dict[str, Any], list[str]]:
    """Write the cohort's figures into ``out``; returns metrics.json's content and what could
    not be computed (one phrase each).

    Args:
        spec: the model's run-metadata record (loss, training mean age, calibration).
        done: the predicted studies (``bone_age.inference.predict.predict_studies``).
        out: the folder to write into (exists).
    """
    loss = spec.loss
    age_range = (loss.min_age, loss.max_age)
    no_age = [p for p in done if p.item.age is None]
    outside = [p for p in done if p.item.age is not None
               and not trainable_age(p.item.age, age_range)]
    scored = [p for p in done if p.item.age is not None and trainable_age(p.item.age, age_range)]
    if not scored:
        raise EvaluationError(
            f"none of the {plural(len(done), 'predicted study')} has an age within the model's "
            f"{age_range[0]}-{age_range[1]} years ({len(no_age)} without an age): nothing to "
            "score; python -m bone_age.predict gives the predictions alone")
    missing: list[str] = []
    age = np.array([p.item.age for p in scored], dtype=np.float64)
    pred = np.array([p.age for p in scored]).astype(np.float64)
    if spec.train_mean_age is None:
        missing.append("the baseline MAE (the model file records no training mean age: written "
                       f"by an older bone-age, run-metadata version {spec.version})")
    outputs = None if any(p.outputs is None for p in scored) else \
        np.stack([p.outputs for p in scored])
    calibration = spec.calibration
    summary, per_study, not_given = cal.calibration_summary(
        loss, age, pred, outputs, None if calibration is None else
        cal.Calibration.from_dict(calibration))
    missing += not_given
    if calibration is None and spec.version >= 3:
        missing.append("(the calibration is written into the checkpoints that hold the tested "
                       "weights only: evaluate the run's tested checkpoint for those figures)")
    metrics: dict[str, Any] = {
        "kind": KIND,
        "model_file_run": spec.meta.get("run", {}),
        "n": len(scored), "n_predicted": len(done), "n_no_age": len(no_age),
        "n_outside_age_range": len(outside),
        **accuracy(pred, age, spec.train_mean_age),
        **cal.headline(summary),
        "not_computed": missing,
    }
    sexes = [p.item.sex or "" for p in scored]
    figures = write_figures(out, age, pred, sexes, metrics["mae"],
                            figure_title(spec.meta.get("run", {}), "evaluated cohort"))
    if "reliability" in summary:
        figures["reliability"] = reliability_plot(summary["reliability"],
                                                  out / "reliability.png", "evaluated cohort")
    write_text_atomic(out / "calibration.json", json.dumps(summary, indent=2))
    write_gaps(out / "age_gap.csv", [p.item.subject_id for p in scored], sexes, age, per_study)
    sites = [p.item.site for p in done]
    columns, rows = prediction_table(
        [p.item.subject_id for p in done], [p.item.sex or "" for p in done],
        [p.item.age for p in done], np.array([p.age for p in done]),
        np.array([p.sd for p in done]), extra={"site": sites} if any(sites) else None)
    write_csv(out / "predictions.csv", columns, rows)
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2, allow_nan=True))
    return metrics, missing


def _publish(tmp: Path, out: Path) -> None:
    """Move the finished files into ``out``; an evaluation's file this one did not write (a
    reliability plot of an earlier model) is removed rather than left to mislead."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUTS:
        if (tmp / name).exists():
            replace(tmp / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)


def _check_out(out: Path, inputs: list[Path], cohort: Path) -> Path:
    """DIR: a folder that is absent, empty or holds an earlier evaluation's files only."""
    check_output_dir(out, "evaluation")
    check_not_input(out, "evaluation", inputs, [cohort])  # the cohort may be a DICOM folder
    check_outside_inputs(out, "evaluation", cohort)  # or one DICOM file
    for name in OUTPUTS:
        check_replaceable(out / name, "evaluation")
    for source in inputs:
        if source.exists() and source.resolve().is_relative_to(out.resolve()):
            raise OutputError(f"{out}: the evaluation folder holds the input {source}; give "
                              "another --out")
    if out.is_dir():
        others = sorted(e.name for e in os.scandir(out) if e.name not in OUTPUTS)
        if others:
            raise OutputError(f"{out}: folder holds other files ({', '.join(others[:3])}); "
                              "give an empty or new folder")
    return out


def _print_summary(metrics: dict[str, Any], missing: list[str], refused: int, out: Path) -> None:
    m = metrics
    print(f"evaluated {m['n']} of {plural(m['n_predicted'], 'predicted study')} "
          f"({m['n_no_age']} without an age and {m['n_outside_age_range']} outside the model's "
          f"age range: predicted, not scored; {refused} refused)")
    line = f"MAE {m['mae']:.2f} (SD {m['mae_sd']:.2f}) y, r {m['pearson_r']:.2f}"
    if "baseline_mae" in m:
        line += (f"; baseline (training mean {m['train_mean_age']:.1f} y) MAE "
                 f"{m['baseline_mae']:.2f} y")
    print(line)
    if "gap_corrected_mae" in m:
        print(f"age gap {m['gap_mean']:+.2f} y; bias-corrected (fitted on the training run's "
              f"inner validation) {m['gap_corrected_mean']:+.2f} y")
    if "calib_cov90" in m:
        extra = ""
        if "calib_cov90_T" in m and "temperature" in m:
            extra = (f"; {m['calib_cov90_T']:.2f} after temperature scaling "
                     f"(T = {m['temperature']:.2f})")
        print(f"90% interval coverage {m['calib_cov90']:.2f}{extra}")
    for what in missing:
        print(f"bone-age evaluate: not computed: {what}", file=sys.stderr)
    print(f"-> {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m bone_age.evaluate",
                                description=__doc__.splitlines()[0])
    add_model_and_input(p, "cohort")
    p.add_argument("--out", type=Path, required=True, help="folder for the figures")
    return model_and_input(p.parse_args(argv))


@command("evaluate")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = _check_out(args.out, [args.model, args.cohort], args.cohort)
    predictor = load_predictor(args.model, args.onnx)
    items, refused, scrub = read_input(args.cohort, args.view, args.key_file,
                                       out / "predictions.csv")
    check_outside_inputs(out, "evaluation", args.cohort, items)  # a manifest's scans
    done, more = predict_studies(predictor, items, args.batch_size)
    refused += more
    if not done:  # one line; the reasons go to a file
        raise nothing_predicted(args.cohort, refused, scrub, out)
    listed = write_refusals(refused, scrub, out)  # beside OUT, as when nothing is predicted
    if refused:  # one line: each study's reason is in the listing
        print(f"bone-age evaluate: {len(refused)} refused ({listed})", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Staged in a folder beside OUT; nothing else in OUT's parent (maybe HOME) is cleaned: a
    # folder a killed evaluation left there cannot be told from a user's (docs/errors.md).
    tmp = temp_path(out, keep_suffix=False)
    tmp.mkdir()
    try:
        metrics, missing = score(predictor.spec, done, tmp)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _print_summary(metrics, missing, len(refused), out)
    return EXIT_PARTIAL if refused else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
