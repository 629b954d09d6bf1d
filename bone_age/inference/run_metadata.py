"""The run-metadata record: what a trained model needs besides its weights, in one versioned form.

Training writes it into every checkpoint (entry ``bone_age``) and the export into every ONNX
model (metadata property ``bone_age``, as JSON); inference, export, explain and the model card
read it. It holds plain values only, so ``torch.load(..., weights_only=True)`` reads it:

- ``model``: the ``BoneAgeNet`` arguments (never ImageNet weights: the state dict has them);
- ``loss``: ``{"name": mse|softmax|mv, ...parameters}`` (``bone_age.losses.loss_from_dict``);
- ``data``: views, image size, resize mode, posterior mirroring, count normalisation;
- ``run`` (model choice, backbone, fold, ...) and ``training_data`` (counts, ages, sex ratio; no
  identities): descriptive, for the model card; ``training_data.train_mean_age`` (version 3) is
  the mean age of the training split, the baseline that evaluation compares against;
- ``calibration`` (version 3, once fitted): the age-gap correction and softmax temperature fitted
  on the inner-validation split after testing. A checkpoint is saved before that fit: training's
  calibration callback writes the section into the run's checkpoints that hold the tested
  weights afterwards; export copies it into the ONNX model. A file without it is still usable;
  evaluation then says which figures it cannot give.

Versions: 1 (bone-age before the package restructure: every loss stored the mean-variance
weights), 2 (each loss stores its own parameters) and 3 (adds ``training_data.train_mean_age``
and ``calibration``). All are read; newer ones are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bone_age.data.dicom import DicomReadError, read_study_views
from bone_age.data.preprocess import Preprocess
from bone_age.data.transforms import CountNormalize
from bone_age.losses import AgeLoss, loss_from_dict
from bone_age.utils.errors import BoneAgeError, brief

METADATA_KEY = "bone_age"  # the checkpoint entry / ONNX metadata property
METADATA_VERSION = 3
VIEWS = ("anterior", "posterior")
_MAX_SIDE = 4096  # larger inputs are no bone scan model's; a guard against tampered settings


class CheckpointError(BoneAgeError, ValueError):
    """A checkpoint or model file that cannot be used for inference (message says why)."""


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


def _version(meta: dict, source: str) -> int:
    version = meta.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.version is {version!r}, "
                              "expected a positive integer")
    if version > METADATA_VERSION:
        raise CheckpointError(f"{source}: run metadata version {version} was written by a newer "
                              f"bone-age (this one reads up to {METADATA_VERSION}); update it")
    return version


def check_settings(meta: Any, source: str) -> None:
    """Check a run-metadata record; CheckpointError names the file and the key at fault.

    Args:
        meta: the record as a plain dict (a checkpoint's entry, or an ONNX model's metadata).
        source: the file, for messages.
    """
    if not isinstance(meta, dict):
        raise CheckpointError(f"{source}: settings {METADATA_KEY} are not a mapping")
    version = _version(meta, source)
    views = _setting(meta, "data.views", list, source)
    if not 1 <= len(views) <= 2 or len(set(views)) != len(views) or \
            any(v not in VIEWS for v in views):
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
    built = {}
    for key, build in (("data", lambda d: (Preprocess(tuple(d["image_size"]), d["resize"],
                                                       d["mirror_posterior"]),
                                            CountNormalize(d["normalize"], d["percentile"]))),
                       ("loss", lambda d: loss_from_dict(d, legacy=version == 1))):
        try:
            built[key] = build(meta[key])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: settings {METADATA_KEY}.{key}: {brief(err)}"
                                  ) from None
    outputs = built["loss"].num_outputs
    if model.get("num_outputs", outputs) != outputs:
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.model.num_outputs is "
                              f"{model['num_outputs']!r} but the loss settings need {outputs}")
    _check_evaluation_facts(meta, source)


def _number(meta: dict, key: str, source: str, positive: bool = False) -> float:
    value = _setting(meta, key, (int, float), source)
    if not np.isfinite(value) or (positive and value <= 0):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.{key} is {value!r}, expected a "
                              f"finite{' positive' if positive else ''} number")
    return float(value)


def _check_evaluation_facts(meta: dict, source: str) -> None:
    """The optional facts evaluation reads: numbers where present (absent: not computed)."""
    if "training_data" in meta and not isinstance(meta["training_data"], dict):
        raise CheckpointError(f"{source}: setting {METADATA_KEY}.training_data is not a mapping")
    if "train_mean_age" in meta.get("training_data", {}):
        _number(meta, "training_data.train_mean_age", source)
    if "calibration" not in meta:
        return
    _setting(meta, "calibration", dict, source)
    _number(meta, "calibration.gap_correction.intercept", source)
    _number(meta, "calibration.gap_correction.slope", source)
    if meta["calibration"].get("temperature") is not None:
        _number(meta, "calibration.temperature", source, positive=True)


@dataclass
class RunMetadata:
    """A model's run-metadata record, checked on creation (``CheckpointError`` names the key).

    Args:
        meta: the record as a plain dict (``to_dict`` gives it back).
        source: the file it came from, for messages.
    """

    meta: dict[str, Any]
    source: str = field(default="model", compare=False)

    def __post_init__(self) -> None:
        check_settings(self.meta, self.source)

    @classmethod
    def build(
        cls, model: dict[str, Any], loss: AgeLoss, preprocess: Preprocess,
        normalize: CountNormalize, views: tuple[str, ...], run: dict[str, Any] | None = None,
        training_data: dict[str, Any] | None = None,
    ) -> RunMetadata:
        """The record of a trained model, from the objects training used.

        Args:
            model: ``BoneAgeNet`` arguments as configured (``_target_`` and the like are dropped).
            loss: the training loss.
            preprocess: the study -> count image transform of the data module.
            normalize: the count normalisation of the data module.
            views: the views the model reads, in input order.
            run: descriptive run identity (strings and numbers only are kept).
            training_data: aggregate facts about the training subjects (no identities).
        """
        model_kwargs = {k: v for k, v in model.items() if not k.startswith("_")}
        # The state dict carries the trained weights: never fetch ImageNet weights to rebuild.
        model_kwargs.update(pretrained=False, weights=None, num_outputs=loss.num_outputs)
        meta: dict[str, Any] = {
            "version": METADATA_VERSION,
            "run": {k: v for k, v in (run or {}).items() if isinstance(v, (str, int, float, bool))},
            "model": model_kwargs,
            "loss": loss.to_dict(),
            "data": {"views": list(views), "image_size": list(preprocess.image_size),
                     "resize": preprocess.resize,
                     "mirror_posterior": bool(preprocess.mirror_posterior),
                     "normalize": normalize.method, "percentile": float(normalize.q * 100.0)},
        }
        if training_data is not None:
            meta["training_data"] = training_data
        return cls(meta, "run metadata")

    def to_dict(self) -> dict[str, Any]:
        """The record as plain values (for a checkpoint, or JSON in an ONNX model)."""
        return self.meta

    def with_calibration(self, section: dict[str, Any]) -> RunMetadata:
        """This record with the ``calibration`` section fitted after testing (checked)."""
        return RunMetadata({**self.meta, "version": max(self.version, 3),
                            "calibration": section}, self.source)

    @property
    def train_mean_age(self) -> float | None:
        """The training split's mean age (None in files written before version 3)."""
        value = self.meta.get("training_data", {}).get("train_mean_age")
        return None if value is None else float(value)

    @property
    def calibration(self) -> dict[str, Any] | None:
        """The ``calibration`` section (None: not fitted, or a file before version 3)."""
        return self.meta.get("calibration")

    @property
    def version(self) -> int:
        return int(self.meta.get("version", 1))

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(self.meta["data"]["views"])

    @property
    def image_size(self) -> tuple[int, int]:
        h, w = self.meta["data"]["image_size"]
        return h, w

    @property
    def mirror_posterior(self) -> bool:
        return bool(self.meta["data"]["mirror_posterior"])

    @property
    def use_sex(self) -> bool:
        return bool(self.meta["model"].get("use_sex", False))

    @property
    def model_kwargs(self) -> dict[str, Any]:
        """``BoneAgeNet`` arguments; never ImageNet weights (the state dict has the weights)."""
        return {**self.meta["model"], "pretrained": False, "weights": None}

    @property
    def loss(self) -> AgeLoss:
        return loss_from_dict(self.meta["loss"], legacy=self.version == 1)

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
