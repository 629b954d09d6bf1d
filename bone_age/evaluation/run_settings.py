"""A run's recorded settings: what they are, how they are recorded and how two are compared.

The settings of a run are its configuration's keys that change its results (``experiment_settings``:
the whole configuration but the keys ``NOT_SETTINGS`` names), with the cohort named by its
manifest's content, not its path (``recorded_settings``). They are recorded in ``metrics.json``
(``settings``) and in every checkpoint (entry ``SETTINGS_KEY``) by the RunConfig callback; the
Table 1 report pools only runs whose settings match; ``resume=true`` skips or continues only a
run recorded with the command's settings (``settings_now``, ``settings_change``).

Here, in ``evaluation/``, because both the report and training (its RunConfig callback and
resume) read it, and evaluation never imports training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bone_age.data.cache import file_digest
from bone_age.utils.config_keys import NOT_SETTINGS

# Entry of every checkpoint holding the run's settings (as metrics.json records them), which a
# resume compares with the settings of the command that continues the run.
SETTINGS_KEY = "bone_age_settings"
# The config node whose sections RunConfig records (conf/callbacks/run_config.yaml): the
# settings a command will record are read from it.
RECORDED_NODE = "callbacks.run_config.config"
UNSET = "(unset)"


def is_ignored(name: str) -> bool:
    """Whether the dotted key ``name`` (or a key above it) does not change a run's results."""
    return any(name == k or name.startswith(k + ".") for k in NOT_SETTINGS)


def experiment_settings(config: DictConfig | dict) -> dict[str, Any]:
    """The settings of a run that change its results, flattened to dotted keys.

    Args:
        config: a run's configuration (the sections ``RunConfig`` logs, or Hydra's
            ``.hydra/config.yaml``). Keys in ``NOT_SETTINGS`` are left out before they are read;
            interpolations are resolved where they can be (else kept as written).
    """
    if not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    out: dict[str, Any] = {}

    def walk(node: DictConfig, prefix: str) -> None:
        for key in node:
            name = f"{prefix}{key}"
            if is_ignored(name) or OmegaConf.is_missing(node, key):
                continue
            if key == "_target_":  # where a class lives is no setting; which loss it is, is
                if name == "loss._target_":
                    out["loss.name"] = loss_name(node[key])
                continue
            try:
                value = node[key]
            except OmegaConfBaseException:  # e.g. ${hydra:...} outside a Hydra job
                value = OmegaConf.to_container(node, resolve=False)[key]
            if isinstance(value, DictConfig) and len(value):
                walk(value, name + ".")
            elif isinstance(value, (DictConfig, ListConfig)):
                try:
                    out[name] = OmegaConf.to_container(value, resolve=True)
                except OmegaConfBaseException:
                    out[name] = OmegaConf.to_container(value, resolve=False)
            else:
                out[name] = value

    walk(config, "")
    return out


def loss_name(target: str) -> str:
    """The registered name of the loss class ``target`` (the path itself where it is unknown)."""
    from bone_age.losses import LOSSES

    by_class = {f"{cls.__module__}.{cls.__qualname__}": name for name, cls in LOSSES.items()}
    by_class.update({f"bone_age.losses.{cls.__qualname__}": name for name, cls in LOSSES.items()})
    return by_class.get(str(target), str(target))


def recorded_settings(settings: dict[str, Any], manifest: Path | None) -> dict[str, Any]:
    """``settings`` as recorded: the cohort named by its manifest's content, not its path.

    Args:
        settings: ``experiment_settings`` of the run's configuration.
        manifest: the cohort's manifest file (None: ``data.manifest`` is kept as it is).
    """
    settings = dict(settings)
    if settings.get("data.manifest") and manifest is not None:
        settings["data.manifest"] = "blake2b:" + file_digest(manifest)
    return settings


def settings_now(cfg: DictConfig) -> dict[str, Any] | None:
    """The settings a run of ``cfg`` will record (None: no RunConfig callback records them).

    Args:
        cfg: the run's whole configuration.
    """
    config = OmegaConf.select(cfg, RECORDED_NODE, default=None)
    if config is None:
        return None
    manifest = cfg.data.get("manifest")
    try:
        return recorded_settings(experiment_settings(config), Path(manifest) if manifest else None)
    except OSError:  # a missing manifest: the run says so itself, once it reads it
        return experiment_settings(config)


def settings_change(recorded: Any, now: dict[str, Any] | None, where: Path) -> str | None:
    """Why a run recorded with ``recorded`` settings may not be skipped or continued by a
    command of settings ``now``: one line naming the first keys that differ, their recorded and
    new values; None when they match (or either is unknown: recorded before settings were kept).

    Args:
        recorded: the settings a run recorded (metrics.json's ``settings``, a checkpoint's
            ``SETTINGS_KEY``), as read from the file.
        now: ``settings_now`` of the command.
        where: the file that recorded them, for the message.
    """
    if not isinstance(recorded, dict) or now is None:
        return None
    plain = json.loads(json.dumps(now, default=str))
    differ = [k for k in sorted(set(recorded) | set(plain)) if recorded.get(k) != plain.get(k)]
    if not differ:
        return None
    shown = "; ".join(f"{k}: {recorded.get(k, UNSET)!s} there, {plain.get(k, UNSET)!s} "
                      "now" for k in differ[:3]) + ("; ..." if len(differ) > 3 else "")
    return (f"{where}: this run was started with other settings ({shown}); resume=true "
            "only skips or continues a run of the same settings: run the new settings "
            "in another hydra.run.dir (or hydra.sweep.dir)")
