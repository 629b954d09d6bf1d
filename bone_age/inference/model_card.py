"""A short model card (markdown) written next to an exported model.

Only aggregate facts about the training data (counts, age range, sex ratio): never identities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bone_age.inference.run_metadata import RunMetadata
from bone_age.utils.outputs import write_text_atomic


def _fmt(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def _training_lines(train: dict[str, Any], phantom: bool) -> list[str]:
    n_fit = train["n_female"] + train["n_male"]
    return [
        f"- Source: {'synthetic phantom cohort' if phantom else 'manifest cohort'}; fold "
        f"{train['fold']} of {train['num_folds']} (subject-level cross-validation).",
        f"- Subjects: {train['n_train']} training, {train['n_val']} validation, "
        f"{train['n_test']} held-out test; {train['n_excluded']} studies excluded.",
        f"- Age (training + validation): {train['age_min']:g}-{train['age_max']:g} years, "
        f"mean {train['age_mean']:.1f} (SD {train['age_sd']:.1f}).",
        f"- Sex: {train['n_female']} female, {train['n_male']} male "
        f"(F:M {train['n_female'] / max(train['n_male'], 1):.2f}:1, n = {n_fit}).",
    ]


def model_card(record: RunMetadata, metrics: dict[str, Any] | None, model_file: str) -> str:
    meta = record.to_dict()
    model, ages, data = meta["model"], record.loss, meta["data"]
    # Descriptive entries only: a checkpoint written by hand may lack them or hold other types.
    run, train = (meta.get(k) if isinstance(meta.get(k), dict) else {}
                  for k in ("run", "training_data"))
    views = " + ".join(data["views"])
    phantom = train.get("source") == "phantom"
    lines = [
        f"# Model card: {model_file}",
        "",
        "## Model",
        f"- Bone age from whole-body bone scintigraphy ({views} view(s)), as in Nguyen et al., "
        "\"Multiple Inputs Deep Neural Networks for Bone Age Estimation Using Whole-Body Bone "
        "Scintigraphy\".",
        f"- Network: `{run.get('model', '?')}` with a `{model['backbone']}` trunk; loss "
        f"`{ages.name}`; ages {ages.min_age}-{ages.max_age} years"
        + ("; uses sex as an input." if model.get("use_sex") else "."),
        f"- Input: counts resized to {data['image_size'][0]} x {data['image_size'][1]} "
        f"({data['resize']}), posterior mirrored: {data['mirror_posterior']}, "
        f"normalisation {data['normalize']} ({data['percentile']:g}th percentile).",
        "- Outputs: predicted bone age (years) and the SD of the predicted age distribution "
        "(NaN for an MSE model).",
        "",
        "## Training data",
    ]
    try:
        lines += _training_lines(train, phantom) if train else ["- Not recorded in the checkpoint."]
    except (KeyError, TypeError, ValueError):
        lines.append("- Recorded incompletely in the checkpoint.")
    lines += ["", "## Performance (held-out fold, Table 1 metrics)"]
    if metrics:
        lines += [
            "| MAE (SD), years | Pearson r | baseline MAE | n test |",
            "|---|---|---|---|",
            f"| {_fmt(metrics.get('mae'))} ({_fmt(metrics.get('mae_sd'))}) | "
            f"{_fmt(metrics.get('pearson_r'))} | {_fmt(metrics.get('baseline_mae'))} | "
            f"{metrics.get('n_test', 'n/a')} |",
            "",
            "Baseline: always predicting the training mean age.",
        ]
    else:
        lines.append("- No metrics.json found beside the checkpoint's run folder.")
    lines += [
        "",
        "## Intended use and limits",
        "- Research use only. Not a medical device; not for diagnosis or any clinical decision.",
        "- Valid only for scans like the training data (Tc-99m whole-body bone scans, the "
        "same views, adults in the trained age range); ages outside it cannot be predicted.",
    ]
    if phantom:
        lines.append("- Trained on a synthetic phantom: it demonstrates the pipeline and must not "
                     "be applied to patients.")
    return "\n".join(lines) + "\n"


def card_path(model_path: str | Path) -> Path:
    """``MODEL.md`` for ``MODEL.onnx``."""
    return Path(model_path).with_suffix(".md")


def write_model_card(
    record: RunMetadata, metrics: dict[str, Any] | None, model_path: str | Path
) -> Path:
    """``MODEL.md`` beside ``MODEL.onnx`` (written whole or not at all); returns its path."""
    return write_text_atomic(card_path(model_path),
                             model_card(record, metrics, Path(model_path).name))
