"""Predictors: count images (N, V, H, W) -> (age, SD), from a checkpoint or an ONNX model.

``run`` also gives the network's raw outputs (the logits of a distribution loss), which
evaluation needs for calibration coverage; an ONNX model exported before they were part of its
graph gives None.

The input path is exactly training's: ``read_study_views`` -> ``Preprocess`` (counts, resized) ->
``CountNormalize`` (inside the ONNX graph for exported models), no augmentation; the settings
come from the model's run-metadata record.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bone_age.inference.checkpoint import load_checkpoint, model_file
from bone_age.inference.run_metadata import METADATA_KEY, CheckpointError, RunMetadata
from bone_age.utils.errors import brief


class TorchPredictor:
    """Checkpoint -> (age, SD) for batches of count images (N, V, H, W)."""

    def __init__(self, checkpoint: str | Path) -> None:
        self.net, self.spec = load_checkpoint(checkpoint)
        self.normalize = self.spec.normalize()
        self.loss = self.spec.loss

    @torch.no_grad()
    def run(self, counts: np.ndarray, sex: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Ages, SDs (NaN where the loss gives none) and raw network outputs of a batch."""
        images = self.normalize(torch.from_numpy(counts))
        sex_t = torch.from_numpy(sex) if self.spec.use_sex else None
        outputs = self.net(images, sex_t)
        age, sd = self.loss.predict(outputs)
        sd = torch.full_like(age, float("nan")) if sd is None else sd
        return age.numpy(), sd.numpy(), outputs.numpy()

    def __call__(self, counts: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(counts, sex)[:2]


class OnnxPredictor:
    """An exported model (``python -m bone_age.export``) run by onnxruntime."""

    def __init__(self, path: str | Path) -> None:
        from bone_age.utils.extras import require

        ort = require("onnxruntime", "running an ONNX model")

        path = model_file(path, "ONNX model")
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
        self.spec = RunMetadata(meta, str(path))
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
        self.has_outputs = "outputs" in outputs
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

    def run(self, counts: np.ndarray, sex: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Ages, SDs and raw outputs (None for a model exported without them) of a batch."""
        feed = {"counts": counts.astype(np.float32)}
        if self.spec.use_sex:
            feed["sex"] = sex.astype(np.float32)
        names = ["age", "sd", *(["outputs"] if self.has_outputs else [])]
        found = self.session.run(names, feed)
        return found[0], found[1], found[2] if self.has_outputs else None

    def __call__(self, counts: np.ndarray, sex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.run(counts, sex)[:2]
