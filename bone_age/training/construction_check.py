"""Every setting outside the table of rules, checked by the libraries that take it, before the
run folder exists.

The table (``bone_age.utils.config_keys``) cannot know every key of Lightning's Trainer, torch's
optimizers and schedulers or a callback (a user adds any of them with +key=value). So each
`_target_` node of the config is held against its target's signature (an unknown key, or a
value of the wrong type, says so), and the objects a run builds are built once here, on nothing
(an optimizer on a dummy parameter, its scheduler stepped once, the Trainer without loggers or
callbacks): whatever they raise becomes one line naming the key.
"""

from __future__ import annotations

import collections.abc
import contextlib
import copy
import inspect
import logging
import math
import os
import types
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

from bone_age.training.key_checks import ABSENT, SettingsError, resolved
from bone_age.utils.config_keys import is_int, shown
from bone_age.utils.errors import BoneAgeError

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


def _check_no_nan(cfg: DictConfig) -> None:
    """No setting of any library means anything with NaN: refused wherever it is typed."""
    for key in _leaves(cfg):
        value = resolved(cfg, key)
        if isinstance(value, float) and math.isnan(value):
            raise SettingsError(f"{key} must be a number, got nan")


def _callable_of(key: str, node: DictConfig) -> Any:
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        return get_object(str(target))
    except Exception as err:  # noqa: BLE001 - any import failure is the setting's fault here
        raise SettingsError(f"{key}._target_ must name a class or function that can be "
                            f"imported, got {shown(target)} ({_brief(err)})") from None


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
        return is_int(value)
    if hint is float:
        return is_int(value) or isinstance(value, float)
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
        return "one of " + ", ".join(shown(a) for a in args)
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
        value = resolved(cfg, full)
        if value is ABSENT or (isinstance(value, dict) and "_target_" in value):
            continue  # unresolvable here, or an object of its own (checked as a node)
        hint = hints.get(str(arg))
        if hint is None and isinstance(param.default, bool):
            hint = bool  # no usable hint: a true/false default still says what it takes
        if hint is not None and _fits(value, hint) is False:
            raise SettingsError(f"{full} must be {_described(hint)} (a setting of {name}), "
                                f"got {shown(value)}")


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
            raise SettingsError(f"{name}={shown(settings[culprits[0]])} is refused by "
                                f"{target} ({_brief(cause)})") from None
        listed = ", ".join(f"{k}={shown(settings[k])}" for k in own)
        raise SettingsError(f"{key} ({listed}) is refused by {target} ({_brief(cause)})") \
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
