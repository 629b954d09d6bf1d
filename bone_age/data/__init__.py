"""Data: manifests, DICOM reading, preprocessing, the cache and the fold DataModule.

Nothing here knows about models.
"""

from bone_age.data.datamodule import BoneAgeDataModule, DataError
from bone_age.data.manifest import ManifestError, Problem, Study, read_manifest

__all__ = ["BoneAgeDataModule", "DataError", "ManifestError", "Problem", "Study", "read_manifest"]
