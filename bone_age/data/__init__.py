"""Data: manifests, DICOM reading, preprocessing, the cache and the fold DataModule.

Nothing here knows about models.
"""

from bone_age.data.manifest import ManifestError, Problem, Study, read_manifest

__all__ = ["BoneAgeDataModule", "DataError", "ManifestError", "Problem", "Study", "read_manifest"]


def __getattr__(name: str):
    # Lazy: the DataModule pulls in torch + Lightning, which the DICOM indexer does not need.
    if name in ("BoneAgeDataModule", "DataError"):
        from bone_age.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(name)
