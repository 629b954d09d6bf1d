"""Checkpoint files: read weights-only (no pickled code in them runs), checked, loaded.

The network is rebuilt from the run-metadata record the checkpoint carries
(``bone_age.inference.run_metadata``); nothing here imports training code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from bone_age.inference.run_metadata import METADATA_KEY, CheckpointError, RunMetadata, _few
from bone_age.models import BoneAgeNet
from bone_age.utils.errors import brief
from bone_age.utils.files import not_regular

__all__ = ["CheckpointError", "load_checkpoint", "model_file", "read_checkpoint",
           "weights_mismatch"]


def model_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a non-empty file; else CheckpointError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a {what} file")
    why = not_regular(path)  # a FIFO would block the load
    if why is not None:
        raise CheckpointError(f"{path}: {what} file {why}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes), no {what} in it")
    return path


def _damaged_member(path: Path) -> str | None:
    """The first member of a zip-format checkpoint whose stored CRC-32 does not match."""
    if not zipfile.is_zipfile(path):
        return None  # torch's legacy format, or not a checkpoint: torch.load says which
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        return f"the archive itself ({brief(err)})"


def _load_error(err: BaseException) -> str:
    """What torch.load's error says, in a few words (its messages run to paragraphs)."""
    text = " ".join(str(err).split())
    marker = "WeightsUnpickler error:"
    if marker in text:  # weights-only refusal: what it found is after the marker
        text = text.split(marker, 1)[1].strip()
    first = text.split(". ", 1)[0][:160]
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The content of a checkpoint, loaded weights-only: no pickled code in it is run.

    Raises:
        CheckpointError: missing, empty, corrupt or unsafe file, or not a mapping.
    """
    path = model_file(path, "checkpoint")
    damaged = _damaged_member(path)
    if damaged:  # torch.load does not check the CRCs: a changed byte would load silently
        raise CheckpointError(f"{path}: damaged file: checksum mismatch in {damaged} (a "
                              "changed or broken copy); use an intact copy")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unsafe pickles and corrupt files alike: refuse, one line
        raise CheckpointError(f"{path}: not a checkpoint, or a damaged one ({_load_error(err)}; "
                              "only weights are read, nothing in the file is run)") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (holds a "
                              f"{type(ckpt).__name__}, not a mapping)")
    return ckpt


def weights_mismatch(
    expected: dict[str, torch.Tensor], found: Any, model: str = "the network"
) -> str | None:
    """Why the weights ``found`` cannot be loaded into a model of state dict ``expected``.

    None when they fit: same keys, tensors of the same shapes, all values finite.

    Args:
        expected: the state dict of the model to load into.
        found: the checkpoint's ``state_dict`` entry (anything: it comes from a file).
        model: what the model is, for the message.
    """
    if not isinstance(found, dict):
        return f"state_dict is a {type(found).__name__}, not a mapping of weights"
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + \
            ([f"unexpected {_few(unexpected)}"] if unexpected else [])
        return f"weights do not fit {model}: " + "; ".join(parts)
    for key, value in found.items():
        if not torch.is_tensor(value):
            return f"weight {key} is a {type(value).__name__}, not a tensor"
        if value.shape != expected[key].shape:
            return (f"weight {key} has shape {list(value.shape)}, {model} needs "
                    f"{list(expected[key].shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"weight {key} holds NaN or infinite values"
    return None


def load_checkpoint(path: str | Path) -> tuple[BoneAgeNet, RunMetadata]:
    """The network (eval mode, CPU) and its settings from a Lightning checkpoint.

    Raises:
        CheckpointError: the file cannot be used; the message names it and the key at fault.
    """
    ckpt = read_checkpoint(path)
    if METADATA_KEY not in ckpt:
        raise CheckpointError(f"{path}: no '{METADATA_KEY}' settings in the checkpoint (written "
                              "by training's RunConfig callback; retrain with callbacks=default)")
    spec = RunMetadata(ckpt[METADATA_KEY], str(path))
    try:
        net = BoneAgeNet(**spec.model_kwargs)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: settings {METADATA_KEY}.model cannot build the network "
                              f"({brief(err)})") from None
    if not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: no 'state_dict' (weights) in the checkpoint")
    state = {k: v for k, v in ckpt["state_dict"].items()
             if isinstance(k, str) and k.startswith("net.")}
    problem = weights_mismatch({f"net.{k}": v for k, v in net.state_dict().items()}, state,
                               "the network its settings build")
    if problem:
        raise CheckpointError(f"{path}: {problem}")
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    return net.eval(), spec
