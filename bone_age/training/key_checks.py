"""The settings users type, checked against their rules: one line naming the key, the value
and what is allowed (``bone-age run: data.batch_size must be a whole number >= 1, got 0``).

The rules are the table of ``bone_age.utils.config_keys`` (one entry per key: its rule and
whether it changes results); here they are held against a composed config (``check_keys``),
with the rules between keys, the GPUs a run names and leave-one-site-out's folds against the
cohort's sites. ``bone_age.training.settings_check`` runs this and then the construction check
(``construction_check``: every other key, by the libraries).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from bone_age.utils.config_keys import RULES, is_int, key_problem, shown
from bone_age.utils.errors import BoneAgeError

# A key the config does not hold (a phantom's keys in a manifest run).
ABSENT = object()


class SettingsError(BoneAgeError, ValueError):
    """A setting outside what it allows (the message names key, value and what is allowed)."""


_MISSING_HINTS = {
    "data.manifest": "data=manifest reads a manifest CSV: add data.manifest=PATH "
                     "(python -m bone_age.index writes one), or use data=phantom",
}


def _value(cfg: DictConfig, key: str) -> Any:
    """The plain value of ``key`` (lists and mappings as Python containers), or ABSENT."""
    value = OmegaConf.select(cfg, key, default=ABSENT, throw_on_missing=True)
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def resolved(cfg: DictConfig, key: str) -> Any:
    """The value of ``key`` or ABSENT when it cannot be resolved here (``${hydra:...}`` outside
    a Hydra run, a mandatory value not set: the rules report those)."""
    try:
        return _value(cfg, key)
    except Exception:  # noqa: BLE001 - resolution errors are reported where the value is used
        return ABSENT


def check_keys(cfg: DictConfig) -> None:
    """Every key of ``RULES`` the config holds, then the rules between keys, the hardware and
    leave-one-site-out's folds against the cohort's sites.

    Raises:
        SettingsError: the first setting outside what it allows.
    """
    for key, rule in RULES.items():
        try:
            value = _value(cfg, key)
        except MissingMandatoryValue:
            hint = _MISSING_HINTS.get(key, f"set it: {key}=...")
            raise SettingsError(f"{key} is not set: {hint}") from None
        if value is ABSENT:
            continue
        problem = key_problem(key, value, rule)
        if problem is not None:
            raise SettingsError(problem)
    source = str(_value(cfg, "data.source._target_"))
    if source.endswith("ManifestSource") and _value(cfg, "data.manifest") in (None, ABSENT):
        raise SettingsError(f"data.manifest is not set: {_MISSING_HINTS['data.manifest']}")
    # loss.min_age below loss.max_age: the loss's own check, when the construction check
    # builds it.
    low, high = _value(cfg, "trainer.min_epochs"), _value(cfg, "trainer.max_epochs")
    if is_int(low) and is_int(high) and low > high:
        raise SettingsError(f"trainer.min_epochs must be at most trainer.max_epochs ({high}), "
                            f"got {low}")
    _check_devices(cfg)
    _check_site_folds(cfg)


def _site_count(cfg: DictConfig) -> int | None:
    """The cohort's number of sites, without generating or caching anything: a phantom's
    ``sites`` option, a manifest's distinct ``site`` values; None where it cannot be read here
    (the run's own reader reports an unreadable manifest)."""
    source = str(_value(cfg, "data.source._target_"))
    if source.endswith("PhantomSource"):
        sites = (resolved(cfg, "data.phantom_options") or {})
        count = sites.get("sites", 1) if isinstance(sites, dict) else 1
        return count if is_int(count) else None  # a bad value: the phantom's own check
    manifest = resolved(cfg, "data.manifest")
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
    fold = resolved(cfg, "data.fold")
    if resolved(cfg, "data.split") != "site" or not is_int(fold):
        return
    count = _site_count(cfg)
    if count is None:
        return
    if count < 2:
        manifest = resolved(cfg, "data.manifest")
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
    too_many = is_int(devices) and devices > visible
    if too_many or any(d >= visible for d in wanted):
        raise SettingsError(f"trainer.devices must name at most the {visible} visible GPU(s) "
                            f"(0..{visible - 1}), got {shown(devices)} ({where})")


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
