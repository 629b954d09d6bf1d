"""The config keys users type: one table, ``KEYS``, giving each key's rule (what it accepts) and
whether it changes a run's results.

From it come ``RULES`` (the keys a run's settings check holds against their rule,
``bone_age.training.key_checks``) and ``NOT_SETTINGS`` (the keys, and key prefixes, left out of
a run's recorded settings, ``bone_age.evaluation.run_settings``: the fold, where files are,
speed and display switches, loggers, the hardware layout and the preset's name, whose settings
are recorded themselves). The rules are hand-written: OmegaConf's structured configs check
types only (no ranges or choices) and report over several lines; a rule here is one small
function that returns None for an allowed value, else what is allowed (for the message
``<key> must be <allowed>, got <value>``).

Plain Python (no OmegaConf) so that any layer may read it: the data module checks its
``num_workers`` by the same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A rule returns None when a value is allowed, else what is allowed (for the message).
Rule = Callable[[Any], "str | None"]


def is_int(value: Any) -> bool:
    """A whole number that is not a bool (YAML's true is no count)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (is_int(value) or isinstance(value, float)) and math.isfinite(value)


def shown(value: Any) -> str:
    """``value`` as a message shows it: texts quoted, the rest as written."""
    return repr(value) if isinstance(value, str) else str(value)


def integer(low: int, high: int | None = None) -> Rule:
    """A whole number >= ``low`` (and <= ``high``)."""
    allowed = (f"a whole number >= {low}" if high is None
               else f"a whole number from {low} to {high}")
    return lambda v: None if is_int(v) and low <= v and (high is None or v <= high) else allowed


def number(low: float, high: float = math.inf, *, low_open: bool = False,
           high_open: bool = False) -> Rule:
    """A finite number in [low, high] (an open end excluded)."""
    left = f"{'>' if low_open else '>='} {low:g}"
    right = f"{'<' if high_open else '<='} {high:g}"
    allowed = f"a number {left}" + ("" if math.isinf(high) else f" and {right}")

    def check(v: Any) -> str | None:
        ok = _is_number(v) and (v > low if low_open else v >= low) and \
            (v < high if high_open else v <= high)
        return None if ok else allowed
    return check


def choice(*options: Any) -> Rule:
    """One of ``options`` (of the same type: YAML's 1 is not '1')."""
    allowed = "one of " + ", ".join(repr(o) if isinstance(o, str) else str(o) for o in options)
    return lambda v: None if any(v == o and type(v) is type(o) for o in options) else allowed


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty text"


def optional(rule: Rule) -> Rule:
    """null, or what ``rule`` allows."""
    return lambda v: None if v is None else (None if rule(v) is None else f"null or {rule(v)}")


def either(*rules: Rule) -> Rule:
    """What any of ``rules`` allows."""
    def check(v: Any) -> str | None:
        problems = [rule(v) for rule in rules]
        return None if None in problems else " or ".join(str(p) for p in problems)
    return check


def sizes(count: int | None, low: int, high: int, what: str) -> Rule:
    """A list of ``count`` (any number if None, at least one) whole numbers in [low, high]."""
    allowed = (f"[{what}]" if count else f"a list [{what}, ...]") + \
        f", whole numbers from {low} to {high}"

    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and (len(v) == count if count else len(v) >= 1) and \
            all(is_int(x) and low <= x <= high for x in v)
        return None if ok else allowed
    return check


def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "a mapping {key: value}"


@dataclass(frozen=True)
class Key:
    """A config key users type.

    Args:
        rule: what it accepts (None: any value; the libraries that take it check it).
        changes_results: whether runs that differ in it differ in what they compute (False:
            left out of the run's recorded settings, by which the report pools runs and resume
            matches them).
    """

    rule: Rule | None
    changes_results: bool


def setting(rule: Rule | None = None) -> Key:
    """A key that changes a run's results."""
    return Key(rule, True)


def not_setting(rule: Rule | None = None) -> Key:
    """A key (or, without a rule, a key prefix) that does not change a run's results."""
    return Key(rule, False)


COUNT = integer(1)
SEED = integer(0, 2**32 - 1)  # what seed_everything and numpy accept
PRECISIONS = (64, 32, 16, "64-true", "32-true", "16-true", "bf16-true", "16-mixed",
              "bf16-mixed", "64", "32", "16", "bf16", "transformer-engine",
              "transformer-engine-float16")  # Lightning's accepted values

KEYS: dict[str, Key] = {
    "seed": setting(SEED),
    "resume": not_setting(flag),
    "verbose": not_setting(flag),
    "yes": not_setting(flag),
    "threads": not_setting(either(choice("auto"), COUNT)),
    "test_ckpt": setting(choice("best", "last")),
    "speed": not_setting(),
    "speed.channels_last": not_setting(flag),
    "speed.compile": not_setting(flag),
    # data (a phantom's keys only where data=phantom)
    "data.manifest": setting(optional(text)),  # recorded by the manifest's content
    "data.image_size": setting(sizes(2, 8, 4096, "height, width")),
    "data.resize": setting(choice("stretch", "pad")),
    "data.mirror_posterior": setting(flag),
    "data.normalize": setting(choice("percentile", "total")),
    "data.percentile": setting(number(0, 100, low_open=True)),
    "data.split": setting(choice("stratified", "site")),
    "data.fold": not_setting(integer(0)),  # the one key a pooled Table 1 row spans
    "data.num_folds": setting(integer(2)),
    "data.val_fraction": setting(number(0, 0.5, low_open=True, high_open=True)),  # as folds.py
    "data.strict": not_setting(flag),
    "data.batch_size": setting(COUNT),
    "data.num_workers": not_setting(either(integer(0), choice("auto"))),
    # Recorded since settings were: kept a setting so that those runs still pool and resume.
    "data.pin_memory": setting(flag),
    "data.cache_workers": not_setting(optional(integer(0))),
    "data.cache_dir": not_setting(),
    "data.progress": not_setting(flag),
    "data.split_seed": setting(SEED),
    "data.folds_file": setting(optional(text)),
    "data.subjects": setting(optional(COUNT)),  # null: not a phantom run (PhantomSource: COUNT)
    "data.cohort_seed": setting(SEED),
    "data.phantom_options": setting(mapping),
    "data.phantom_dir": not_setting(),
    "data.source.path": not_setting(),  # the manifest is compared by content (data.manifest)
    "data.source.root": not_setting(),
    # model
    "model.backbone": setting(text),
    "model.views": setting(choice(1, 2)),
    "model.pretrained": setting(flag),
    "model.weights": setting(optional(text)),
    "model.share_weights": setting(flag),
    "model.branch_sizes": setting(sizes(None, 1, 1 << 16, "layer size")),
    "model.fusion_size": setting(integer(1, 1 << 16)),
    "model.dropout": setting(number(0, 1, high_open=True)),
    "model.use_sex": setting(flag),
    # loss (the lambdas only for loss=mv); min_age < max_age: the loss's own check
    "loss.min_age": setting(integer(0, 150)),
    "loss.max_age": setting(integer(0, 150)),
    "loss.lambda_mean": setting(number(0)),
    "loss.lambda_var": setting(number(0)),
    # optimisation
    "module.optimizer.lr": setting(number(0, low_open=True)),
    "module.optimizer.weight_decay": setting(number(0)),
    "scheduler.factor": setting(number(0, 1, low_open=True, high_open=True)),
    "scheduler.patience": setting(integer(0)),
    # Callbacks are no settings, but early stopping's are: RunConfig records them as
    # ``early_stopping.*`` (conf/callbacks/run_config.yaml).
    "callbacks": not_setting(),
    "callbacks.early_stopping.patience": setting(integer(0)),
    "callbacks.early_stopping.min_delta": setting(number(0)),
    "callbacks.progress.every_s": not_setting(number(0, low_open=True)),
    # The results writers (conf/results/): what a run writes down, not what it learns.
    "results": not_setting(),
    "augment.enabled": setting(flag),
    "augment.dose_min": setting(number(0, 1, low_open=True)),
    "augment.gain": setting(number(1)),
    "augment.rotate_deg": setting(number(0, 180)),
    "augment.scale": setting(number(0, 1, high_open=True)),
    "augment.translate": setting(number(0, 1, high_open=True)),
    # trainer
    "trainer.max_epochs": setting(COUNT),
    "trainer.precision": setting(choice(*PRECISIONS)),
    "trainer.accelerator": not_setting(choice("auto", "cpu", "gpu", "cuda", "mps")),
    "trainer.devices": not_setting(either(choice("auto"), integer(1),
                                          sizes(None, 0, 1023, "device index"))),
    "trainer.num_nodes": not_setting(COUNT),
    "trainer.strategy": not_setting(),
    "trainer.plugins": not_setting(),
    "trainer.default_root_dir": not_setting(),
    "trainer.benchmark": not_setting(),
    "trainer.log_every_n_steps": not_setting(COUNT),
    "trainer.deterministic": not_setting(either(flag, choice("warn"))),
    "trainer.enable_progress_bar": not_setting(flag),
    "trainer.enable_model_summary": not_setting(flag),
    # Lightning takes these at construction and fails on them only in fit (a modulo by zero,
    # a negative clip): their ranges are Lightning's documented ones.
    "trainer.min_epochs": setting(optional(integer(0))),
    "trainer.max_steps": setting(integer(-1)),
    "trainer.min_steps": setting(optional(integer(0))),
    "trainer.accumulate_grad_batches": setting(COUNT),
    "trainer.check_val_every_n_epoch": setting(optional(COUNT)),
    "trainer.val_check_interval": setting(optional(either(integer(1),
                                                          number(0, 1, low_open=True)))),
    "trainer.num_sanity_val_steps": setting(optional(integer(-1))),
    "trainer.gradient_clip_val": setting(optional(number(0))),
    "trainer.limit_train_batches": setting(optional(either(integer(0), number(0, 1)))),
    "trainer.limit_val_batches": setting(optional(either(integer(0), number(0, 1)))),
    "trainer.limit_test_batches": setting(optional(either(integer(0), number(0, 1)))),
    "trainer.overfit_batches": setting(either(integer(0), number(0, 1))),
    "trainer.reload_dataloaders_every_n_epochs": setting(integer(0)),
    "trainer.fast_dev_run": setting(either(flag, integer(0))),
    # whole groups: where files go, loggers, Hydra, the cluster, the preset's name
    "experiment": not_setting(),
    "paths": not_setting(),
    "logger": not_setting(),
    "hydra": not_setting(),
    "slurm": not_setting(),
}

RULES: dict[str, Rule] = {k: key.rule for k, key in KEYS.items() if key.rule is not None}
NOT_SETTINGS: tuple[str, ...] = tuple(k for k, key in KEYS.items() if not key.changes_results)


def key_problem(key: str, value: Any, rule: Rule | None = None) -> str | None:
    """``<key> must be <allowed>, got <value>`` when ``value`` breaks ``key``'s rule (or
    ``rule``, where a caller needs a stricter one), else None.

    Args:
        key: a key of ``KEYS`` (dotted).
        value: its plain value.
        rule: the rule to apply instead of the table's.
    """
    allowed = (rule or RULES[key])(value)
    return None if allowed is None else f"{key} must be {allowed}, got {shown(value)}"
