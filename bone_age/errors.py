"""Errors a user can fix (bad config, files or manifests): reported in one line, no traceback."""

from __future__ import annotations

from hydra.errors import InstantiationException
from omegaconf.errors import OmegaConfBaseException

from bone_age.cluster import SlurmConfigError
from bone_age.data import DataError, ManifestError
from bone_age.data.dicom import DicomReadError
from bone_age.losses import AgeOutOfRangeError
from bone_age.models.trunk import PretrainedWeightsError

USER_ERRORS = (
    DataError, ManifestError, DicomReadError, AgeOutOfRangeError, PretrainedWeightsError,
    OmegaConfBaseException, FileNotFoundError, SlurmConfigError,
)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of an error the user can fix, or None for a bug.

    Objects are built by Hydra's ``instantiate``, which wraps what their constructors raise;
    a ValueError or TypeError raised while building from config is a configuration mistake.
    """
    if isinstance(err, USER_ERRORS):
        return str(err)
    if isinstance(err, InstantiationException):
        cause = err.__cause__
        if isinstance(cause, (*USER_ERRORS, ValueError, TypeError)):
            return str(cause)
        return str(err).splitlines()[0]
    return None
