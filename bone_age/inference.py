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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bone_age.callbacks import METADATA_KEY
from bone_age.data.dicom import DicomReadError, read_study_views
from bone_age.data.preprocess import Preprocess
from bone_age.data.transforms import CountNormalize
from bone_age.losses import AgeLoss
from bone_age.models import BoneAgeNet


class CheckpointError(ValueError):
    """A checkpoint or model file that cannot be used for inference (message says why)."""


@dataclass
class Spec:
    """The model's inference settings, from the checkpoint's ``bone_age`` entry."""

    meta: dict[str, Any]

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


def load_checkpoint(path: str | Path) -> tuple[BoneAgeNet, Spec]:
    """The network (eval mode, CPU) and its settings from a Lightning checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unsafe pickles and corrupt files alike: refuse, one line
        raise CheckpointError(f"{path}: not a loadable checkpoint "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    meta = ckpt.get(METADATA_KEY) if isinstance(ckpt, dict) else None
    if not meta:
        raise CheckpointError(f"{path}: no '{METADATA_KEY}' settings in the checkpoint (written "
                              "by bone_age.callbacks.RunConfig; retrain with callbacks=default)")
    net = BoneAgeNet(**meta["model"])
    state = {k.removeprefix("net."): v for k, v in ckpt["state_dict"].items()
             if k.startswith("net.")}
    net.load_state_dict(state)
    return net.eval(), Spec(meta)


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
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX model file does not exist")
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in props:
            raise CheckpointError(f"{path}: no '{METADATA_KEY}' metadata (not exported by "
                                  "python -m bone_age.export)")
        self.spec = Spec(json.loads(props[METADATA_KEY]))

    def __call__(self, counts: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feed = {"counts": counts.astype(np.float32)}
        if self.spec.use_sex:
            feed["sex"] = sex.astype(np.float32)
        age, sd = self.session.run(["age", "sd"], feed)
        return age, sd
