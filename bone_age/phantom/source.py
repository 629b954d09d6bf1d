"""The phantom as a cohort source (config node ``data.source`` of ``data=phantom``).

``PhantomSource`` gives the data module a manifest as ``bone_age.data.sources.CohortSource``
asks (a protocol: nothing here imports data/), writing the cohort first where it has not yet
been written; ``phantom_yardsticks`` reads a phantom cohort's floor and oracle back for a run's
results. Here, not in data/, so that data/ never imports the phantom (phantom -> data -> utils).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bone_age.utils.config_keys import COUNT, key_problem

from .cohort import cohort_options, cohort_yardsticks, ensure_cohort


@dataclass(frozen=True)
class PhantomSource:
    """The built-in synthetic cohort (``data=phantom``), written once per size and seed.

    Args:
        subjects: number of studies.
        seed: the cohort's seed.
        root: folder that holds the cohorts (one ``n{subjects}_seed{seed}`` folder each;
            ``..._sites{K}`` for a K-site cohort, so it never replaces the one-site cohort).
        options: further ``bone_age.phantom.generate_cohort`` options (sigma, variability, ...).
    """

    subjects: int
    seed: int = 0
    root: str = "data/phantom"
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The settings check's rule, without its null (null: not a phantom run).
        problem = key_problem("data.subjects", self.subjects, COUNT)
        if problem:
            raise ValueError(problem)
        if not isinstance(self.options, Mapping):
            raise ValueError(f"data.phantom_options must be a mapping {{option: value}}, got "
                             f"{self.options!r}")
        # The phantom's own check, here so that a run refuses a bad option before it makes
        # any folder, instead of when the cohort is first generated.
        try:
            cohort_options(self.subjects, self.seed, **dict(self.options))
        except ValueError as err:
            raise ValueError(f"data.phantom_options: {err}") from None

    @property
    def folder(self) -> Path:
        name = f"n{self.subjects}_seed{self.seed}"
        sites = (self.options or {}).get("sites", 1)
        if isinstance(sites, int) and not isinstance(sites, bool) and sites != 1:
            name += f"_sites{sites}"  # any other value is refused by the phantom's options
        return Path(self.root) / name

    def manifest_path(self, generate: bool = False) -> Path:
        if generate:
            return Path(ensure_cohort(self.folder, self.subjects, self.seed, **dict(self.options)))
        return self.folder / "manifest.csv"

    @property
    def is_phantom(self) -> bool:
        return True


def phantom_yardsticks(manifest: Path | str) -> dict[str, float]:
    """A phantom cohort's floor and oracle MAE (``phantom_floor_mae``, ``phantom_oracle_mae``)
    from its ``phantom_info.json``; empty for a cohort that is not a phantom.

    Args:
        manifest: the cohort's manifest (``phantom_info.json`` is read beside it).
    """
    return cohort_yardsticks(manifest)
