"""Where a cohort comes from (config node ``data.source``, picked by ``data=phantom|manifest``).

A source names the manifest of its cohort; the phantom's source
(``bone_age.phantom.source.PhantomSource``, above data/ in the layers: data/ never imports the
phantom) writes its cohort first if it has not yet been written. Everything after the manifest
(reading, caching, folds) is the same for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class CohortSource(Protocol):
    """A cohort described by a manifest CSV."""

    def manifest_path(self, generate: bool = False) -> Path:
        """The manifest; with ``generate``, first write the cohort if the source makes one."""
        ...

    @property
    def is_phantom(self) -> bool:
        """Whether the cohort is synthetic (the model card says so)."""
        ...


@dataclass(frozen=True)
class ManifestSource:
    """A cohort given by a manifest CSV (``data=manifest data.manifest=PATH``).

    Args:
        path: the manifest file.
    """

    path: str

    def manifest_path(self, generate: bool = False) -> Path:
        return Path(self.path)

    @property
    def is_phantom(self) -> bool:
        # A phantom cohort given as a manifest has phantom_info.json beside it.
        return (Path(self.path).parent / "phantom_info.json").is_file()
