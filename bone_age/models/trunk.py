"""The convolutional trunk of a timm model followed by global average pooling.

Only the trunk is kept (``features_only``): for VGG16 that is the 13 convolution layers without
fc6/fc7 (14,714,688 parameters), as the paper adds its own fully connected layers on top.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from bone_age.utils.errors import BoneAgeError


class PretrainedWeightsError(BoneAgeError, RuntimeError):
    """ImageNet weights were asked for but could not be loaded."""


class Trunk(nn.Module):
    """timm feature extractor (last stage) + global average pooling -> (N, out_features)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.out_features: int = body.feature_info.channels()[-1]
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(x)[-1]).flatten(1)


def check_trunk_settings(backbone: str, weights: str | None = None) -> None:
    """What ``create_trunk`` checks before building anything (a training run's settings check
    calls it too, before its run folder exists: building a trunk there would cost seconds).

    Raises:
        ValueError: ``backbone`` is no timm architecture.
        PretrainedWeightsError: ``weights`` is not a file.
    """
    if backbone not in timm.list_models():
        raise ValueError(f"model.backbone: {backbone!r} is not a timm architecture")
    if weights and not Path(weights).is_file():
        raise PretrainedWeightsError(f"model.weights: file not found: {Path(weights)}")


def create_trunk(
    backbone: str, pretrained: bool = False, weights: str | None = None
) -> Trunk:
    """Build the trunk of timm model ``backbone``.

    ``pretrained`` fetches ImageNet weights through timm (needs the network or a filled cache);
    ``weights`` is a local file of timm/torchvision weights for the full model. With neither, the
    trunk starts from random initialisation.
    """
    check_trunk_settings(backbone, weights)
    kwargs: dict = {"features_only": True, "out_indices": (-1,)}
    if weights:
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(weights))}
    try:
        body = timm.create_model(backbone, pretrained=bool(pretrained or weights), **kwargs)
    except (OSError, RuntimeError, ValueError) as err:
        source = f"file {weights}" if weights else "the model hub"
        raise PretrainedWeightsError(
            f"model.pretrained: could not load ImageNet weights for {backbone} from {source} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]}). Put a weights file at "
            "model.weights=PATH, or train from scratch with model.pretrained=false."
        ) from err
    return Trunk(body)
