"""The paper's training losses as plain functions of (network output, ages): eq. 1-6.

Ages are in years. For the classification losses the K output logits stand for the one-year
classes ``ages = min_age, min_age + 1, ..., max_age`` (paper: 40..80, K = 41). All losses are
averaged over the batch (reduction "mean" over N), exactly as equations (2)-(4) and (6) write them.

Every figure read off the outputs (eq. 5's expected age, its SD, the regression unit in years)
and every loss term is computed in float32 (float64 under ``precision=64-true``) with autocast
off, whatever ``trainer.precision`` is: in bf16, 60 years has a step of 0.25 y, so a bf16 decode
rounds every prediction to that grid.

Equation (1) of the paper is ``L = Ls + Lm + Lv`` and mentions two weights it then drops; we keep
them as ``lambda_mean`` and ``lambda_var`` with the defaults of the mean-variance loss paper it
cites (Pan et al., CVPR 2018): 0.2 and 0.05.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from bone_age.utils.errors import BoneAgeError


class AgeOutOfRangeError(BoneAgeError, ValueError):
    """An age label lies outside the class range of the model."""


@contextmanager
def full_precision(t: torch.Tensor) -> Iterator[torch.Tensor]:
    """``t`` in float32 (float64 kept as it is) with autocast off on its device, inside the block.

    Args:
        t: network outputs of any floating dtype (bf16/fp16 under mixed precision).
    """
    with torch.autocast(device_type=t.device.type, enabled=False):
        yield t if t.dtype == torch.float64 else t.float()


def class_ages(
    min_age: int, max_age: int, device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The age (years) that each output class stands for: min_age..max_age inclusive."""
    return torch.arange(min_age, max_age + 1, dtype=dtype, device=device)


def age_to_class(ages: torch.Tensor, min_age: int, max_age: int) -> torch.Tensor:
    """Class index of each age: class ``a`` covers [a - 0.5, a + 0.5) years, so halves round up
    (40.5 -> 41, 41.5 -> 42), as ``bone_age.data.labels.trainable_age`` and the calibration's
    class intervals read them; ages outside the classes are an error."""
    low, high = ages.min().item(), ages.max().item()
    if low < min_age - 0.5 or high >= max_age + 0.5:
        raise AgeOutOfRangeError(
            f"age label {low if low < min_age - 0.5 else high:g} is outside the model's class "
            f"range {min_age}-{max_age} years; filter the cohort or widen the class range"
        )
    return torch.floor(ages - min_age + 0.5).long()


def distribution_moments(logits: torch.Tensor, ages: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Softmax p, its mean (paper eq. 5: the predicted age) and its variance, per sample.

    Computed in float32 (or float64) with autocast off, whatever the dtype of ``logits``.
    """
    with full_precision(logits) as z:
        ages = ages.to(z.dtype)
        p = z.softmax(dim=-1)
        mean = p @ ages
        var = (p * (ages.unsqueeze(0) - mean.unsqueeze(1)) ** 2).sum(dim=-1)
    return p, mean, var


def mse_loss(outputs: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
    """Eq. (6): mean over the batch of (y_hat - y)^2, ``outputs`` of shape (N,) or (N, 1)."""
    with full_precision(outputs) as y:
        return F.mse_loss(y.reshape(-1), ages.to(y.dtype))


def softmax_loss(
    logits: torch.Tensor, ages: torch.Tensor, min_age: int = 40, max_age: int = 80
) -> torch.Tensor:
    """Eq. (2): mean over the batch of -log p_{i, y_i} (cross-entropy on one-year classes)."""
    with full_precision(logits) as z:
        return F.cross_entropy(z, age_to_class(ages, min_age, max_age))


def mean_variance_loss(
    logits: torch.Tensor,
    ages: torch.Tensor,
    min_age: int = 40,
    max_age: int = 80,
    lambda_mean: float = 0.2,
    lambda_var: float = 0.05,
) -> torch.Tensor:
    """Eq. (1): Ls + lambda_mean * Lm + lambda_var * Lv.

    Lm (eq. 3) = 1/(2N) sum_i (m_i - y_i)^2 with m_i = sum_j j p_ij, and Lv (eq. 4) =
    1/N sum_i sum_j p_ij (j - m_i)^2, with j running over the class ages in years.
    """
    ls = softmax_loss(logits, ages, min_age, max_age)
    _, mean, var = distribution_moments(logits, class_ages(min_age, max_age, logits.device))
    with full_precision(mean):
        lm = 0.5 * ((mean - ages.to(mean.dtype)) ** 2).mean()
        lv = var.mean()
    return ls + lambda_mean * lm + lambda_var * lv
