"""Inference from a checkpoint or an exported ONNX model, with the training preprocessing.

A checkpoint is loaded with ``torch.load(..., weights_only=True)``: no pickled code from the
file is executed. Everything needed to rebuild the network and its input pipeline is the plain
``bone_age`` entry that ``bone_age.callbacks.RunConfig`` stores in every checkpoint. An ONNX
model carries the same entry as JSON in its metadata_props.

The input path is exactly training's: ``read_study_views`` -> ``Preprocess`` (counts, resized) ->
``CountNormalize`` (inside the ONNX graph for exported models), no augmentation.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bone_age.callbacks import METADATA_KEY
from bone_age.data.dicom import DicomReadError, read_study_views
from bone_age.data.preprocess import Preprocess
from bone_age.data.transforms import CountNormalize
from bone_age.errors import BoneAgeError, brief
from bone_age.losses import AgeLoss
from bone_age.models import BoneAgeNet


class CheckpointError(BoneAgeError, ValueError):
    """A checkpoint or model file that cannot be used for inference (message says why)."""


_VIEWS = ("anterior", "posterior")
_MAX_SIDE = 4096  # larger inputs are no bone scan model's; a guard against tampered settings


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" and {len(keys) - n} more" if len(keys) > n else "")


def _setting(meta: dict, key: str, kind: type | tuple[type, ...], source: str) -> Any:
    """``meta[a][b]...`` for key ``a.b``: present and of ``kind``, else CheckpointError."""
    node: Any = meta
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"{source}: setting {METADATA_KEY}.{key} is missing")
        node = node[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.{key} is {node!r}, "
                              f"expected a {names}")
    return node


def check_settings(meta: Any, source: str) -> None:
    """Check the ``bone_age`` settings a model file carries; CheckpointError names the key.

    Args:
        meta: the settings (``RunConfig``'s entry of a checkpoint, or an ONNX model's metadata).
        source: the file, for messages.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: settings {METADATA_KEY} are not a mapping")
    views = _setting(meta, "data.views", list, source)
    if not 1 <= len(views) <= 2 or len(set(views)) != len(views) or \
            any(v not in _VIEWS for v in views):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.data.views is {views!r}, "
                              "expected [anterior] or [anterior, posterior]")
    size = _setting(meta, "data.image_size", list, source)
    if len(size) != 2 or not all(type(s) is int and 8 <= s <= _MAX_SIDE for s in size):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.data.image_size is {size!r}, "
                              f"expected [height, width] in 8..{_MAX_SIDE}")
    _setting(meta, "data.resize", str, source)
    _setting(meta, "data.mirror_posterior", bool, source)
    _setting(meta, "data.normalize", str, source)
    percentile = _setting(meta, "data.percentile", (int, float), source)
    if not 0 < percentile <= 100:
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.data.percentile is "
                              f"{percentile!r}, expected a number in (0, 100]")
    model = _setting(meta, "model", dict, source)
    _setting(meta, "model.backbone", str, source)
    _setting(meta, "loss", dict, source)
    if model.get("views", 2) != len(views):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.model.views is "
                              f"{model.get('views', 2)!r} but data.views names {len(views)}")
    if not isinstance(model.get("use_sex", False), bool):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.model.use_sex is "
                              f"{model['use_sex']!r}, expected true or false")
    for key, build in (("data", lambda d: (Preprocess(tuple(d["image_size"]), d["resize"],
                                                       d["mirror_posterior"]),
                                            CountNormalize(d["normalize"], d["percentile"]))),
                       ("loss", lambda d: AgeLoss(**d))):
        try:
            build(meta[key])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: settings {METADATA_KEY}.{key}: {brief(err)}"
                                  ) from None
    outputs = AgeLoss(**meta["loss"]).num_outputs
    if model.get("num_outputs", outputs) != outputs:
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.model.num_outputs is "
                              f"{model['num_outputs']!r} but the loss settings need {outputs}")


@dataclass
class Spec:
    """The model's inference settings, from the checkpoint's ``bone_age`` entry (checked)."""

    meta: dict[str, Any]
    source: str = "model"

    def __post_init__(self) -> None:
        check_settings(self.meta, self.source)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.meta["data"]["views"])

    @property
    def use_sex(self) -> bool:
        return bool(self.meta["model"].get("use_sex", False))

    @property
    def loss(self) -> AgeLoss:
        return AgeLoss(**self.meta["loss"])

    @property
    def preprocess(self) -> Preprocess:
        d = self.meta["data"]
        return Preprocess(tuple(d["image_size"]), d["resize"], d["mirror_posterior"])

    def normalize(self) -> CountNormalize:
        d = self.meta["data"]
        return CountNormalize(d["normalize"], d["percentile"])

    def counts(self, files: dict[str, Path]) -> np.ndarray:
        """(V, H, W) float32 count images of one study, as the training cache stores them."""
        for view in self.views:
            if view not in files:
                raise DicomReadError(
                    "study", f"the model needs the {' and '.join(self.views)} view(s); "
                    f"no {view} view was found")
        return self.preprocess(read_study_views({view: files[view] for view in self.views}))


def _model_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a non-empty file; else CheckpointError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a {what} file")
    if not path.is_file():
        what_is = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"{path}: {what} file {what_is}")
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
    path = _model_file(path, "checkpoint")
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


def load_checkpoint(path: str | Path) -> tuple[BoneAgeNet, Spec]:
    """The network (eval mode, CPU) and its settings from a Lightning checkpoint.

    Raises:
        CheckpointError: the file cannot be used; the message names it and the key at fault.
    """
    ckpt = read_checkpoint(path)
    if METADATA_KEY not in ckpt:
        raise CheckpointError(f"{path}: no '{METADATA_KEY}' settings in the checkpoint (written "
                              "by bone_age.callbacks.RunConfig; retrain with callbacks=default)")
    spec = Spec(ckpt[METADATA_KEY], str(path))
    # The state dict carries the trained weights: never fetch or read ImageNet weights here.
    kwargs = {**spec.meta["model"], "pretrained": False, "weights": None}
    try:
        net = BoneAgeNet(**kwargs)
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


class TorchPredictor:
    """Checkpoint -> (age, SD) for batches of count images (N, V, H, W)."""

    def __init__(self, checkpoint: str | Path) -> None:
        self.net, self.spec = load_checkpoint(checkpoint)
        self.normalize = self.spec.normalize()
        self.loss = self.spec.loss

    @torch.no_grad()
    def __call__(self, counts: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.normalize(torch.from_numpy(counts))
        sex_t = torch.from_numpy(sex) if self.spec.use_sex else None
        age, sd = self.loss.predict(self.net(images, sex_t))
        sd = torch.full_like(age, float("nan")) if sd is None else sd
        return age.numpy(), sd.numpy()


class OnnxPredictor:
    """An exported model (``python -m bone_age.export``) run by onnxruntime."""

    def __init__(self, path: str | Path) -> None:
        from bone_age.extras import require

        ort = require("onnxruntime", "running an ONNX model")

        path = _model_file(path, "ONNX model")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own classes for corrupt files
            raise CheckpointError(f"{path}: not a loadable ONNX model ({brief(err)})") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise CheckpointError(f"{path}: no '{METADATA_KEY}' metadata (not exported by "
                                  "python -m bone_age.export)")
        try:
            meta = json.loads(props[METADATA_KEY])
        except ValueError as err:
            raise CheckpointError(f"{path}: metadata '{METADATA_KEY}' is not JSON ({err})"
                                  ) from None
        self.spec = Spec(meta, str(path))
        self._check_graph(path)

    def _check_graph(self, path: Path) -> None:
        """The graph's inputs and outputs are the ones its settings promise, and it runs."""
        spec = self.spec
        h, w = spec.meta["data"]["image_size"]
        need = {"counts": ["N", len(spec.views), h, w]} | ({"sex": ["N"]} if spec.use_sex else {})
        have = {i.name: i.shape for i in self.session.get_inputs()}
        if set(have) != set(need):
            raise CheckpointError(f"{path}: the model's inputs are {sorted(have)}; its settings "
                                  f"need {sorted(need)}")
        for name, shape in have.items():
            fixed = [(d, n) for d, n in zip(shape, need[name], strict=False) if isinstance(d, int)]
            if len(shape) != len(need[name]) or any(d != n for d, n in fixed if n != "N"):
                raise CheckpointError(f"{path}: input {name} has shape {shape}; its settings "
                                      f"need {need[name]} (N: batch)")
        outputs = [o.name for o in self.session.get_outputs()]
        if not {"age", "sd"} <= set(outputs):
            raise CheckpointError(f"{path}: the model's outputs are {outputs}; "
                                  "need 'age' and 'sd'")
        try:
            age, sd = self(np.ones((1, len(spec.views), h, w), np.float32), np.zeros(1, np.float32))
        except Exception as err:  # onnxruntime's own classes
            raise CheckpointError(f"{path}: the model does not run ({brief(err)})") from None
        if np.shape(age) != (1,) or np.shape(sd) != (1,):
            raise CheckpointError(f"{path}: outputs age and sd have shapes {np.shape(age)} and "
                                  f"{np.shape(sd)} for one study; need one value each")

    def __call__(self, counts: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feed = {"counts": counts.astype(np.float32)}
        if self.spec.use_sex:
            feed["sex"] = sex.astype(np.float32)
        age, sd = self.session.run(["age", "sd"], feed)
        return age, sd
