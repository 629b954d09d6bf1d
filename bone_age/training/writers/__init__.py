"""The run's results writers, one file each (composed in conf/results/): plain objects that
``train()`` hands the ``RunResults`` and the ``FittedRun`` to, in the configured order."""

from bone_age.training.writers.calibration_writer import CalibrationWriter
from bone_age.training.writers.fold_results_writer import FoldResultsWriter
from bone_age.training.writers.settings_writer import SettingsWriter

__all__ = ["CalibrationWriter", "FoldResultsWriter", "SettingsWriter"]
