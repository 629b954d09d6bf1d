"""The run's Lightning callbacks, one file each (composed in conf/callbacks/)."""

from bone_age.training.callbacks.calibration import CalibrationWriter
from bone_age.training.callbacks.checkpoint import RunCheckpoint
from bone_age.training.callbacks.divergence import DivergenceGuard, TrainingDiverged
from bone_age.training.callbacks.progress import EpochProgress
from bone_age.training.callbacks.results import ResultsWriter
from bone_age.training.callbacks.run_config import RunConfig

__all__ = ["CalibrationWriter", "DivergenceGuard", "EpochProgress", "ResultsWriter",
           "RunCheckpoint", "RunConfig", "TrainingDiverged"]
