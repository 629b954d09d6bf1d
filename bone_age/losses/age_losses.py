"""One class per training loss (config group ``loss``): the loss and how to read ages off it.

Each class is its own ``_target_`` and knows the number of network outputs it needs and whether
it predicts a distribution over ages (softmax, mv) or a single value (mse). ``name`` is the key
by which a run-metadata record names the loss (``to_dict`` / ``loss_from_dict``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bone_age.losses.functional import (
    class_ages,
    distribution_moments,
    full_precision,
    mean_variance_loss,
    mse_loss,
    softmax_loss,
)


@dataclass(frozen=True)
class AgeLoss:
    """Common settings: the age range in years (the classes of the distribution losses)."""

    min_age: int = 40
    max_age: int = 80

    name: ClassVar[str] = ""
    predicts_distribution: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.max_age <= self.min_age:  # the one check of the range (the settings check's)
            raise ValueError(f"loss.max_age must be above loss.min_age ({self.min_age}), got "
                             f"{self.max_age}")

    @property
    def num_outputs(self) -> int:
        """Output units of the network: one per one-year class for the distribution losses."""
        return self.max_age - self.min_age + 1 if self.predicts_distribution else 1

    def __call__(self, outputs: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted age and the SD of the predicted distribution (None without one)."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Plain settings with the loss's ``name``, as a run-metadata record stores them."""
        return {"name": self.name, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class MSELoss(AgeLoss):
    """Mean squared error on one regression unit (paper eq. 6)."""

    name: ClassVar[str] = "mse"

    def regression_age(self, outputs: torch.Tensor) -> torch.Tensor:
        """The regression unit read as years: centre + half-range * output.

        A fixed affine map, so that a freshly initialised network starts near the middle of the
        age range instead of at 0 years; the loss itself is still eq. (6) in years.
        """
        centre, half = (self.min_age + self.max_age) / 2, (self.max_age - self.min_age) / 2
        with full_precision(outputs) as y:
            return centre + half * y.reshape(-1)

    def __call__(self, outputs: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return mse_loss(self.regression_age(outputs), ages)

    def predict(self, outputs: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.regression_age(outputs), None


@dataclass(frozen=True)
class SoftmaxLoss(AgeLoss):
    """Cross-entropy over one-year age classes (paper eq. 2); age = the softmax mean (eq. 5)."""

    name: ClassVar[str] = "softmax"
    predicts_distribution: ClassVar[bool] = True

    def __call__(self, outputs: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return softmax_loss(outputs, ages, self.min_age, self.max_age)

    def predict(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ages = class_ages(self.min_age, self.max_age, outputs.device)
        _, mean, var = distribution_moments(outputs, ages)
        with full_precision(var) as v:
            return mean, v.clamp_min(0).sqrt()


@dataclass(frozen=True)
class MeanVarianceLoss(SoftmaxLoss):
    """Softmax + mean-variance loss (paper eq. 1-4), the proposed loss.

    Equation (1) mentions two weights it then drops; we keep them as ``lambda_mean`` and
    ``lambda_var`` with the defaults of the mean-variance loss paper it cites (Pan et al.,
    CVPR 2018): 0.2 and 0.05.
    """

    lambda_mean: float = 0.2
    lambda_var: float = 0.05

    name: ClassVar[str] = "mv"

    def __call__(self, outputs: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        return mean_variance_loss(outputs, ages, self.min_age, self.max_age,
                                  self.lambda_mean, self.lambda_var)


LOSSES: dict[str, type[AgeLoss]] = {cls.name: cls for cls in (MSELoss, SoftmaxLoss,
                                                               MeanVarianceLoss)}


def loss_from_dict(settings: dict[str, Any], legacy: bool = False) -> AgeLoss:
    """The loss a run-metadata record names.

    Args:
        settings: ``{"name": ..., **parameters}`` as ``AgeLoss.to_dict`` writes it.
        legacy: a version-1 record, which stored the mean-variance weights for every loss.

    Raises:
        ValueError: unknown name or parameters (the message names them).
    """
    params = dict(settings)
    name = params.pop("name", None)
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    cls = LOSSES[name]
    known = {f.name for f in dataclasses.fields(cls)}
    if legacy:
        params = {k: v for k, v in params.items() if k in known
                  or k not in ("lambda_mean", "lambda_var")}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"loss {name!r} has no parameter {', '.join(unknown)}")
    return cls(**params)
