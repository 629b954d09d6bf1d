"""The settings users type, checked once when a run starts: one line naming the key, the value
and what is allowed (``bone-age run: data.batch_size must be a whole number >= 1, got 0``).

One table, ``RULES``, holds what each user-facing key of ``conf/`` accepts. It is hand-written:
OmegaConf's structured configs check types only (no ranges or choices) and report over several
lines; a rule here is one small function. ``SettingsCheck`` (a Hydra callback, conf/hydra)
checks before Hydra creates the run folder, so a bad value leaves nothing behind; ``train()``
checks again for each job of a sweep and for runs started from Python.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import inspect
import logging
import math
import os
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write
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
    "yes": flag,
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
    "data.val_fraction": number(0, 0.5, low_open=True, high_open=True),  # as folds.py
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
    "callbacks.early_stopping.min_delta": number(0),
    "callbacks.progress.every_s": number(0, low_open=True),
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
    # Lightning takes these at construction and fails on them only in fit (a modulo by zero,
    # a negative clip): their ranges are Lightning's documented ones.
    "trainer.min_epochs": optional(integer(0)),
    "trainer.max_steps": integer(-1),
    "trainer.min_steps": optional(integer(0)),
    "trainer.accumulate_grad_batches": _COUNT,
    "trainer.check_val_every_n_epoch": optional(_COUNT),
    "trainer.val_check_interval": optional(either(integer(1), number(0, 1, low_open=True))),
    "trainer.num_sanity_val_steps": optional(integer(-1)),
    "trainer.gradient_clip_val": optional(number(0)),
    "trainer.limit_train_batches": optional(either(integer(0), number(0, 1))),
    "trainer.limit_val_batches": optional(either(integer(0), number(0, 1))),
    "trainer.limit_test_batches": optional(either(integer(0), number(0, 1))),
    "trainer.overfit_batches": either(integer(0), number(0, 1)),
    "trainer.reload_dataloaders_every_n_epochs": integer(0),
    "trainer.fast_dev_run": either(flag, integer(0)),
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
    low, high = _value(cfg, "trainer.min_epochs"), _value(cfg, "trainer.max_epochs")
    if _is_int(low) and _is_int(high) and low > high:
        raise SettingsError(f"trainer.min_epochs must be at most trainer.max_epochs ({high}), "
                            f"got {low}")
    _check_devices(cfg)
    _check_site_folds(cfg)
    check_construction(cfg)


def _site_count(cfg: DictConfig) -> int | None:
    """The cohort's number of sites, without generating or caching anything: a phantom's
    ``sites`` option, a manifest's distinct ``site`` values; None where it cannot be read here
    (the run's own reader reports an unreadable manifest)."""
    source = str(_value(cfg, "data.source._target_"))
    if source.endswith("PhantomSource"):
        sites = (_resolved(cfg, "data.phantom_options") or {})
        count = sites.get("sites", 1) if isinstance(sites, dict) else 1
        return count if _is_int(count) else None  # a bad value: the phantom's own check
    manifest = _resolved(cfg, "data.manifest")
    if not isinstance(manifest, str) or not Path(manifest).expanduser().is_file():
        return None
    from bone_age.data.folds import site_order
    from bone_age.data.manifest import SITE_COLUMN, manifest_columns, read_cohort

    path = Path(manifest).expanduser()
    try:
        if SITE_COLUMN not in manifest_columns(path):
            raise SettingsError(f"{manifest}: data.split=site needs a {SITE_COLUMN} column; the "
                                "manifest has none (python -m bone_age.index writes one)")
        return len(site_order([m.site for m in read_cohort(path)]))
    except SettingsError:
        raise
    except (BoneAgeError, OSError):
        return None


def _check_site_folds(cfg: DictConfig) -> None:
    """Leave-one-site-out has one fold per site: ``data.fold`` is checked against the cohort's
    sites here, so that a sweep over folds the cohort does not have stops before its first
    run, not at its fourth (issue 33)."""
    fold = _resolved(cfg, "data.fold")
    if _resolved(cfg, "data.split") != "site" or not _is_int(fold):
        return
    count = _site_count(cfg)
    if count is None:
        return
    if count < 2:
        manifest = _resolved(cfg, "data.manifest")
        where = f"{manifest}: " if isinstance(manifest, str) and not str(
            _value(cfg, "data.source._target_")).endswith("PhantomSource") else ""
        raise SettingsError(f"{where}data.split=site needs at least 2 sites; the cohort has "
                            f"{count} (a manifest's site column, or data.phantom_options.sites=K)")
    if fold >= count:
        raise SettingsError(f"data.fold must be in 0..{count - 1} (data.split=site: one fold "
                            f"per site, {count} sites), got {fold}; sweep data.fold="
                            f"{','.join(str(k) for k in range(count))}")


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
        # Every job's config, composed as the sweeper will compose it, is checked before the
        # first job: a value no job can use stops the sweep now, not after hours of runs.
        self._check(lambda: (check_output_folder("hydra.sweep.dir", config.hydra.sweep.dir),
                             check_sweep(config)))

    @staticmethod
    def _check(check: Callable[[], Any]) -> None:
        try:
            check()
        except (SettingsError, OutputError) as err:  # Hydra would print several lines, exit 1
            sys.exit(fail("run", str(err)))


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The overrides of each job of the sweep, as Hydra's basic sweeper combines them: the
    config's ``hydra.sweeper.params`` then the command line's (the later wins for a key)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(
        [*params, *(str(o) for o in config.hydra.overrides.task)])
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(job) for job in batches[0]] if batches else [[]]


def check_sweep(config: DictConfig) -> None:
    """``check_settings`` on every job's composed config, before the first job runs.

    Raises:
        SettingsError: the first job's setting outside what it allows, naming the key first,
            then the job (its place and overrides).
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if not GlobalHydra.instance().is_initialized():
        return
    loader = GlobalHydra.instance().config_loader()
    jobs = sweep_jobs(config)
    if len(jobs) > 1:  # a second or so a job on a loaded machine: said, not silent
        logging.getLogger("bone_age").info("sweep: checking the settings of its %d runs",
                                           len(jobs))
    instance = HydraConfig.instance()
    saved = instance.cfg
    try:
        for num, overrides in enumerate(jobs):
            job = loader.load_sweep_config(config, list(overrides))
            with read_write(job), open_dict(job):  # as the launcher sets them
                job.hydra.job.num = num
                job.hydra.runtime.output_dir = os.path.abspath(
                    os.path.join(str(config.hydra.sweep.dir), str(num)))
            instance.set_config(job)
            try:
                check_settings(job)
            except SettingsError as err:
                shown = " ".join(o for o in overrides if not o.startswith("hydra."))
                raise SettingsError(f"{err} (sweep run {num + 1} of {len(jobs)}: {shown}); "
                                    "nothing was run") from None
    finally:
        instance.cfg = saved  # type: ignore[assignment]


# -- every other setting: the libraries' own checks, run on throw-away objects -------------------
#
# The table above cannot know every key of Lightning's Trainer, torch's optimizers and
# schedulers or a callback (a user adds any of them with +key=value). So each `_target_` node of
# the config is held against its target's signature (an unknown key, or a value of the wrong
# type, says so), and the objects a run builds are built once here, on nothing (an optimizer on
# a dummy parameter, its scheduler stepped once, the Trainer without loggers or callbacks):
# whatever they raise becomes one line naming the key, before the run folder exists.

_HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")
_QUIET_LOGGERS = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning.pytorch",
                  "bone_age.training.precision")


def _target_nodes(node: Any, prefix: str = "") -> list[tuple[str, DictConfig]]:
    """(key, node) of every `_target_` node, not through interpolations (``module.scheduler``
    is ``${scheduler}``: checked once, as ``scheduler``) nor into a ``_recursive_: false`` node
    (its sections are passed as config)."""
    found: list[tuple[str, DictConfig]] = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((prefix, node))
            if node.get("_recursive_", True) is False:
                return found
        keys: list[Any] = list(node.keys())
    elif isinstance(node, ListConfig):
        keys = list(range(len(node)))
    else:
        return found
    for key in keys:
        if OmegaConf.is_interpolation(node, key) or (prefix == "" and key == "hydra"):
            continue
        child = node._get_node(key)  # unresolved: a missing value is the rules' business
        name = f"{prefix}[{key}]" if isinstance(key, int) else \
            (f"{prefix}.{key}" if prefix else str(key))
        found.extend(_target_nodes(child, name))
    return found


def _leaves(node: Any, prefix: str = "") -> list[str]:
    """The keys of every plain value under ``node`` (Hydra's own node left out)."""
    if isinstance(node, DictConfig):
        items = [(k, f"{prefix}.{k}" if prefix else str(k)) for k in node
                 if not (prefix == "" and k == "hydra")]
    elif isinstance(node, ListConfig):
        items = [(i, f"{prefix}[{i}]") for i in range(len(node))]
    else:
        return [prefix]
    keys: list[str] = []
    for key, name in items:
        if OmegaConf.is_interpolation(node, key):
            keys.append(name)  # its value is checked where it points (or here, resolved)
        else:
            keys.extend(_leaves(node._get_node(key), name))
    return keys


def _resolved(cfg: DictConfig, key: str) -> Any:
    """The value of ``key`` or _ABSENT when it cannot be resolved here (``${hydra:...}`` outside
    a Hydra run, a mandatory value not set: the rules report those)."""
    try:
        return _value(cfg, key)
    except Exception:  # noqa: BLE001 - resolution errors are reported where the value is used
        return _ABSENT


def _check_no_nan(cfg: DictConfig) -> None:
    """No setting of any library means anything with NaN: refused wherever it is typed."""
    for key in _leaves(cfg):
        value = _resolved(cfg, key)
        if isinstance(value, float) and math.isnan(value):
            raise SettingsError(f"{key} must be a number, got nan")


def _callable_of(key: str, node: DictConfig) -> Any:
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        return get_object(str(target))
    except Exception as err:  # noqa: BLE001 - any import failure is the setting's fault here
        raise SettingsError(f"{key}._target_ must name a class or function that can be "
                            f"imported, got {_shown(target)} ({_brief(err)})") from None


def _brief(err: BaseException) -> str:
    from bone_age.utils.errors import brief

    return brief(err)


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """The parameters a target takes by keyword, whether it takes any keyword (``**kwargs``),
    and their type hints (none where they cannot be evaluated)."""
    from bone_age.data.datamodule import USER_KEYS, BoneAgeDataModule

    extra: tuple[str, ...] = ()
    if getattr(target, "__func__", None) is BoneAgeDataModule.from_config.__func__:
        target, extra = BoneAgeDataModule, USER_KEYS  # from_config(**node): drops USER_KEYS
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return {}, True, {}
    params = {name: p for name, p in signature.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    params.update({name: inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY)
                   for name in extra})
    takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    try:
        hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # noqa: BLE001 - hints naming what is not importable: defaults only
        hints = {}
    return params, takes_any, hints


def _fits(value: Any, hint: Any) -> bool | None:
    """Whether ``value`` (plain, from YAML) is of type ``hint``; None when it cannot tell."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_int(value) or isinstance(value, float)
    if hint is str:
        return isinstance(value, str)
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [_fits(value, arg) for arg in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence, collections.abc.Iterable):
        if not isinstance(value, list):
            return False if not isinstance(value, (dict, str)) or origin is not \
                collections.abc.Iterable else None
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                return False
            verdicts = [_fits(v, a) for v, a in zip(value, args, strict=False)]
        else:
            verdicts = [_fits(v, args[0]) for v in value] if args else []
        return False if False in verdicts else (None if None in verdicts else True)
    if origin in (dict, collections.abc.Mapping) or hint in (dict, collections.abc.Mapping):
        return isinstance(value, dict)
    return None  # a class of the library (a Strategy, a Path, a timedelta...): not judged


def _described(hint: Any) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a text",
             type(None): "null"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(_shown(a) for a in args)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_described(a) for a in args))
    return f"of type {getattr(hint, '__name__', None) or str(hint).replace('typing.', '')}"


def _check_target_node(cfg: DictConfig, key: str, node: DictConfig) -> None:
    """Every key of a `_target_` node is a parameter of its target, with a value of its type."""
    target = _callable_of(key, node)
    params, takes_any, hints = _parameters(target)
    name = node.get("_target_")
    for arg in node:
        if str(arg) in _HYDRA_KEYS:
            continue
        full = f"{key}.{arg}" if key else str(arg)
        param = params.get(str(arg))
        if param is None:
            if takes_any or not params:
                continue
            raise SettingsError(f"{full} is not a setting of {name} (its settings: "
                                f"{', '.join(sorted(params))})")
        value = _resolved(cfg, full)
        if value is _ABSENT or (isinstance(value, dict) and "_target_" in value):
            continue  # unresolvable here, or an object of its own (checked as a node)
        hint = hints.get(str(arg))
        if hint is None and isinstance(param.default, bool):
            hint = bool  # no usable hint: a true/false default still says what it takes
        if hint is not None and _fits(value, hint) is False:
            raise SettingsError(f"{full} must be {_described(hint)} (a setting of {name}), "
                                f"got {_shown(value)}")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The throw-away objects say nothing: Lightning's hardware lines and warnings belong to
    the run's own Trainer, and precision's fallback is logged once, by the run."""
    import pytorch_lightning  # noqa: F401 - its import sets its loggers' level: first, then ours

    saved = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    try:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def _hydra_resolvable(cfg: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` interpolations resolve as they will in the run. Before Hydra's run job
    (SettingsCheck) its config is not yet set: it is set here as the job will set it (its
    output folder named, not made) and restored after."""
    from hydra.core.hydra_config import HydraConfig

    hydra_node = cfg.get("hydra") if "hydra" in cfg else None
    if HydraConfig.initialized() or hydra_node is None:
        yield
        return
    job_cfg = copy.deepcopy(cfg)
    with read_write(job_cfg), open_dict(job_cfg):
        run_dir = OmegaConf.select(job_cfg, "hydra.run.dir", default=None)
        if run_dir is not None and OmegaConf.select(job_cfg, "hydra.runtime.output_dir",
                                                    default=None) is None:
            job_cfg.hydra.runtime.output_dir = os.path.abspath(str(run_dir))
    instance = HydraConfig.instance()
    instance.set_config(job_cfg)
    try:
        yield
    finally:
        instance.cfg = None  # type: ignore[assignment] - as before: not set


def _plain(node: DictConfig) -> dict | None:
    """The node's settings resolved; None where they need Hydra's runtime config and there is
    none (a config composed from Python without it: the run itself will say so)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as err:
        if "HydraConfig was not set" in str(err):
            return None
        key = getattr(err, "full_key", None) or node._get_full_key(None)
        message = str(err).splitlines()[0] if str(err).strip() else type(err).__name__
        raise SettingsError(f"{key}: {message}") from None


def _built(key: str, settings: dict | None, build: Callable[[dict], Any]) -> Any:
    """``build(node)``; what it raises becomes a SettingsError naming the key at fault: the one
    whose removal (its default instead) lets the object be built, else the node's only key,
    else the node with its settings."""
    from hydra.errors import InstantiationException

    from bone_age.utils.errors import user_error_message

    if settings is None:  # not resolvable here (see _plain)
        return None
    try:
        return build(settings)
    except SettingsError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever a library raises is the setting's fault
        cause = err.__cause__ if isinstance(err, InstantiationException) and \
            err.__cause__ is not None else err
        target = str(settings.get("_target_", key))
        if target.startswith("bone_age.") and isinstance(cause, (ValueError, BoneAgeError)):
            raise SettingsError(user_error_message(cause) or str(cause)) from None  # names it
        own = [k for k, v in settings.items() if k not in _HYDRA_KEYS and
               not (isinstance(v, dict) and "_target_" in v)]
        culprits = [k for k in own if _builds({k2: v for k2, v in settings.items() if k2 != k},
                                              build)]
        if len(own) == 1 and not culprits:
            culprits = own
        if len(culprits) == 1:
            name = f"{key}.{culprits[0]}"
            raise SettingsError(f"{name}={_shown(settings[culprits[0]])} is refused by "
                                f"{target} ({_brief(cause)})") from None
        shown = ", ".join(f"{k}={_shown(settings[k])}" for k in own)
        raise SettingsError(f"{key} ({shown}) is refused by {target} ({_brief(cause)})") \
            from None


def _builds(settings: dict, build: Callable[[dict], Any]) -> bool:
    try:
        build(settings)
    except Exception:  # noqa: BLE001
        return False
    return True


def _step_scheduler(scheduler: Any) -> None:
    """One step, as the first epoch's end will: a division by zero shows here, not there."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    scheduler.step(1.0) if isinstance(scheduler, ReduceLROnPlateau) else scheduler.step()


def _dry_build(cfg: DictConfig) -> None:
    """The run's objects built once on nothing, by the libraries' own constructors."""
    import torch
    from hydra.utils import instantiate

    from bone_age.data.folds import check_fold_settings, check_split
    from bone_age.training.precision import supported_precision

    data = cfg.get("data")
    if isinstance(data, DictConfig):
        split, fold = data.get("split", "stratified"), data.get("fold", 0)
        try:  # the data module's own check, before it makes its cache folder
            check_split(split)
            check_fold_settings(fold, data.get("num_folds", 5) if split == "stratified"
                                else fold + 2, data.get("val_fraction", 0.1))
        except ValueError as err:
            raise SettingsError(str(err)) from None
        for part in ("source", "preprocess", "normalization"):
            if isinstance(data.get(part), DictConfig) and "_target_" in data[part]:
                _built(f"data.{part}", _plain(data[part]), instantiate)
    model = cfg.get("model")
    if isinstance(model, DictConfig) and isinstance(model.get("backbone"), str):
        from bone_age.models.trunk import check_trunk_settings

        try:  # the trunk's own check; the network itself is built by the run (seconds)
            check_trunk_settings(model.backbone, model.get("weights"))
        except (ValueError, BoneAgeError) as err:
            raise SettingsError(str(err)) from None
    for group in ("augment", "loss"):
        if isinstance(cfg.get(group), DictConfig) and "_target_" in cfg[group]:
            _built(group, _plain(cfg[group]), instantiate)

    optimizer = None
    optimizer_cfg = OmegaConf.select(cfg, "module.optimizer", default=None)
    if isinstance(optimizer_cfg, DictConfig) and "_target_" in optimizer_cfg:
        weight = torch.nn.Parameter(torch.zeros(1))
        optimizer = _built("module.optimizer", _plain(optimizer_cfg),
                           lambda s: instantiate(s)(params=[weight]))
    scheduler_cfg = cfg.get("scheduler")
    if optimizer is not None and isinstance(scheduler_cfg, DictConfig) \
            and "_target_" in scheduler_cfg:
        _built("scheduler", _plain(scheduler_cfg),
               lambda s: _step_scheduler(instantiate(s)(optimizer=optimizer)))

    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and "_target_" in node:
            _built(f"callbacks.{name}", _plain(node), instantiate)
    trainer_cfg = cfg.get("trainer")
    if isinstance(trainer_cfg, DictConfig) and "_target_" in trainer_cfg:
        # No loggers, no callbacks: a Trainer makes no folder until it fits. Its precision is
        # the one the run will use (bf16 falls back on hardware without it).
        settings = _plain(trainer_cfg)
        if settings is not None and "precision" in settings:
            settings["precision"] = supported_precision(trainer_cfg)
        _built("trainer", settings, lambda s: instantiate(s, callbacks=[], logger=False))


def check_construction(cfg: DictConfig) -> None:
    """Every setting outside the table, by the libraries: types and names against each
    `_target_`'s signature, then the run's objects built once (``_dry_build``).

    Raises:
        SettingsError: one line naming the key at fault.
    """
    with _hydra_resolvable(cfg), _quiet():
        _check_no_nan(cfg)
        for key, node in _target_nodes(cfg):
            _check_target_node(cfg, key, node)
        _dry_build(cfg)
