"""Errors a user can fix (bad config, files or manifests): reported in one line, no traceback."""

from omegaconf.errors import OmegaConfBaseException

from bone_age.data import DataError, ManifestError
from bone_age.data.dicom import DicomReadError
from bone_age.losses import AgeOutOfRangeError
from bone_age.models.trunk import PretrainedWeightsError

USER_ERRORS = (
    DataError, ManifestError, DicomReadError, AgeOutOfRangeError, PretrainedWeightsError,
    OmegaConfBaseException, FileNotFoundError,
)
