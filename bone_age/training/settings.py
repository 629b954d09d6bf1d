"""The settings users type, checked once when a run starts: one line naming the key, the value
and what is allowed (``bone-age run: data.batch_size must be a whole number >= 1, got 0``).

One table, ``RULES``, holds what each user-facing key of ``conf/`` accepts. It is hand-written:
OmegaConf's structured configs check types only (no ranges or choices) and report over several
lines; a rule here is one small function. ``SettingsCheck`` (a Hydra callback, conf/hydra)
checks before Hydra creates the run folder, so a bad value leaves nothing behind; ``train()``
checks again for each job of a sweep and for runs started from Python.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bone_age.utils.cores import launched_as_extra_rank
from bone_age.utils.errors import BoneAgeError, fail
from bone_age.utils.outputs import OutputError, check_not_in_use

# A rule returns None when a value is allowed, else what is allowed (for the message).
Rule = Callable[[Any], "str | None"]
_ABSENT = object()


class SettingsError(BoneAgeError, ValueError):
    """A setting outside what it allows (the message names key, value and what is allowed)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def integer(low: int, high: int | None = None) -> Rule:
    allowed = (f"a whole number >= {low}" if high is None
               else f"a whole number from {low} to {high}")
    return lambda v: None if _is_int(v) and low <= v and (high is None or v <= high) else allowed


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
    allowed = "one of " + ", ".join(repr(o) if isinstance(o, str) else str(o) for o in options)
    return lambda v: None if any(v == o and type(v) is type(o) for o in options) else allowed


def flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "a non-empty text"


def optional(rule: Rule) -> Rule:
    return lambda v: None if v is None else (None if rule(v) is None else f"null or {rule(v)}")


def either(*rules: Rule) -> Rule:
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
            all(_is_int(x) and low <= x <= high for x in v)
        return None if ok else allowed
    return check


def mapping(v: Any) -> str | None:
    return None if isinstance(v, dict) else "a mapping {key: value}"


_COUNT = integer(1)
_SEED = integer(0, 2**32 - 1)  # what seed_everything and numpy accept
_PRECISIONS = (64, 32, 16, "64-true", "32-true", "16-true", "bf16-true", "16-mixed",
               "bf16-mixed", "64", "32", "16", "bf16", "transformer-engine",
               "transformer-engine-float16")  # Lightning's accepted values

RULES: dict[str, Rule] = {
    "seed": _SEED,
    "resume": flag,
    "verbose": flag,
    "threads": either(choice("auto"), _COUNT),
    "test_ckpt": choice("best", "last"),
    "speed.channels_last": flag,
    "speed.compile": flag,
    # data (a phantom's keys only where data=phantom)
    "data.manifest": optional(text),
    "data.image_size": sizes(2, 8, 4096, "height, width"),
    "data.resize": choice("stretch", "pad"),
    "data.mirror_posterior": flag,
    "data.normalize": choice("percentile", "total"),
    "data.percentile": number(0, 100, low_open=True),
    "data.split": choice("stratified", "site"),
    "data.fold": integer(0),
    "data.num_folds": integer(2),
    "data.val_fraction": number(0, 1, low_open=True, high_open=True),
    "data.strict": flag,
    "data.batch_size": _COUNT,
    "data.num_workers": either(integer(0), choice("auto")),
    "data.pin_memory": flag,
    "data.cache_workers": optional(integer(0)),
    "data.progress": flag,
    "data.split_seed": _SEED,
    "data.folds_file": optional(text),
    "data.subjects": optional(_COUNT),  # null: not a phantom run (PhantomSource refuses it)
    "data.cohort_seed": _SEED,
    "data.phantom_options": mapping,
    # model
    "model.backbone": text,
    "model.views": choice(1, 2),
    "model.pretrained": flag,
    "model.weights": optional(text),
    "model.share_weights": flag,
    "model.branch_sizes": sizes(None, 1, 1 << 16, "layer size"),
    "model.fusion_size": integer(1, 1 << 16),
    "model.dropout": number(0, 1, high_open=True),
    "model.use_sex": flag,
    # loss (the lambdas only for loss=mv)
    "loss.min_age": integer(0, 150),
    "loss.max_age": integer(0, 150),
    "loss.lambda_mean": number(0),
    "loss.lambda_var": number(0),
    # optimisation
    "module.optimizer.lr": number(0, low_open=True),
    "module.optimizer.weight_decay": number(0),
    "scheduler.factor": number(0, 1, low_open=True, high_open=True),
    "scheduler.patience": integer(0),
    "callbacks.early_stopping.patience": integer(0),
    "augment.enabled": flag,
    "augment.dose_min": number(0, 1, low_open=True),
    "augment.gain": number(1),
    "augment.rotate_deg": number(0, 180),
    "augment.scale": number(0, 1, high_open=True),
    "augment.translate": number(0, 1, high_open=True),
    # trainer
    "trainer.max_epochs": _COUNT,
    "trainer.precision": choice(*_PRECISIONS),
    "trainer.accelerator": choice("auto", "cpu", "gpu", "cuda", "mps"),
    "trainer.devices": either(choice("auto"), integer(1), sizes(None, 0, 1023, "device index")),
    "trainer.num_nodes": _COUNT,
    "trainer.log_every_n_steps": _COUNT,
    "trainer.deterministic": either(flag, choice("warn")),
    "trainer.enable_progress_bar": flag,
    "trainer.enable_model_summary": flag,
}

_MISSING_HINTS = {
    "data.manifest": "data=manifest reads a manifest CSV: add data.manifest=PATH "
                     "(python -m bone_age.index writes one), or use data=phantom",
}


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _value(cfg: DictConfig, key: str) -> Any:
    """The plain value of ``key`` (lists and mappings as Python containers), or _ABSENT."""
    value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_settings(cfg: DictConfig) -> None:
    """Every key of ``RULES`` the config holds, then the rules between keys and the hardware.

    Raises:
        SettingsError: the first setting outside what it allows.
    """
    for key, rule in RULES.items():
        try:
            value = _value(cfg, key)
        except MissingMandatoryValue:
            hint = _MISSING_HINTS.get(key, f"set it: {key}=...")
            raise SettingsError(f"{key} is not set: {hint}") from None
        if value is _ABSENT:
            continue
        allowed = rule(value)
        if allowed is not None:
            raise SettingsError(f"{key} must be {allowed}, got {_shown(value)}")
    source = str(_value(cfg, "data.source._target_"))
    if source.endswith("ManifestSource") and _value(cfg, "data.manifest") in (None, _ABSENT):
        raise SettingsError(f"data.manifest is not set: {_MISSING_HINTS['data.manifest']}")
    low, high = _value(cfg, "loss.min_age"), _value(cfg, "loss.max_age")
    if _ABSENT not in (low, high) and low >= high:
        raise SettingsError(f"loss.max_age must be above loss.min_age ({low}), got {high}")
    _check_devices(cfg)


def _check_devices(cfg: DictConfig) -> None:
    """A GPU run needs the GPUs it names: said here, not as Lightning's cut-off error."""
    accelerator = _value(cfg, "trainer.accelerator")
    if accelerator not in ("gpu", "cuda"):
        return
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    where = (f"CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r}"
             if "CUDA_VISIBLE_DEVICES" in os.environ else "CUDA_VISIBLE_DEVICES is not set")
    if not visible:
        raise SettingsError(f"trainer.accelerator must be a device this machine has, got "
                            f"{accelerator!r}: no CUDA GPU is visible ({where}); use trainer=cpu, "
                            "or check the driver and CUDA_VISIBLE_DEVICES")
    devices = _value(cfg, "trainer.devices")
    wanted = devices if isinstance(devices, list) else []
    too_many = _is_int(devices) and devices > visible
    if too_many or any(d >= visible for d in wanted):
        raise SettingsError(f"trainer.devices must name at most the {visible} visible GPU(s) "
                            f"(0..{visible - 1}), got {_shown(devices)} ({where})")


def check_output_folder(key: str, folder: str | Path) -> None:
    """``folder`` exists as a writable folder, or can be created.

    Raises:
        SettingsError: a file stands on the way, or the folder cannot be written.
    """
    path = Path(folder).expanduser().absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SettingsError(f"{key}: {path}: {existing} is a file, not a folder; choose "
                            f"another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SettingsError(f"{key}: {path}: {existing} cannot be written (permission "
                            f"denied); choose another {key}")


class SettingsCheck(Callback):
    """Hydra callback: the settings and the output folder checked before Hydra creates the
    folder, so that a mistake ends in one line and leaves no folder behind."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # A folder another run holds is refused before Hydra writes its .hydra/ into it.
        self._check(lambda: (check_settings(config),
                             check_output_folder("hydra.run.dir", config.hydra.run.dir),
                             None if launched_as_extra_rank() else
                             check_not_in_use(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Each job's own settings are checked when it starts (train()).
        self._check(lambda: check_output_folder("hydra.sweep.dir", config.hydra.sweep.dir))

    @staticmethod
    def _check(check: Callable[[], Any]) -> None:
        try:
            check()
        except (SettingsError, OutputError) as err:  # Hydra would print several lines, exit 1
            sys.exit(fail("run", str(err)))
