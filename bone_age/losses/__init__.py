"""The paper's losses: one class per loss (``mse``, ``softmax``, ``mv``), each its own
``_target_``; the equations as plain functions in ``functional``. Tensors only: no files, no
Hydra."""

from bone_age.losses.age_losses import (
    LOSSES,
    AgeLoss,
    MeanVarianceLoss,
    MSELoss,
    SoftmaxLoss,
    loss_from_dict,
)
from bone_age.losses.functional import (
    AgeOutOfRangeError,
    age_to_class,
    class_ages,
    distribution_moments,
    full_precision,
    mean_variance_loss,
    mse_loss,
    softmax_loss,
)

__all__ = [
    "LOSSES", "AgeLoss", "AgeOutOfRangeError", "MSELoss", "MeanVarianceLoss", "SoftmaxLoss",
    "age_to_class", "class_ages", "distribution_moments", "full_precision", "loss_from_dict",
    "mean_variance_loss", "mse_loss", "softmax_loss",
]  # fmt: skip
