"""The run's Lightning callbacks, one file each (composed in conf/callbacks/), and the
``FitRecord`` that ``train()`` adds to every run."""

from bone_age.training.callbacks.divergence import DivergenceGuard, TrainingDiverged
from bone_age.training.callbacks.fit_record import FitRecord
from bone_age.training.callbacks.progress import EpochProgress
from bone_age.training.callbacks.run_checkpoint import RunCheckpoint
from bone_age.training.callbacks.run_config import RunConfig

__all__ = ["DivergenceGuard", "EpochProgress", "FitRecord", "RunCheckpoint", "RunConfig",
           "TrainingDiverged"]
