"""Results writer: the run's settings in ``metrics.json`` (``settings``).

The keys that define the experiment, by which the report pools runs and a resumed run is
compared with its command (the cohort named by its manifest's content, not its path). They are
the settings the ``RunConfig`` callback records in every checkpoint; a run without that callback
records none.
"""

from __future__ import annotations

from bone_age.training.run_results import FittedRun, RunResults


class SettingsWriter:
    """Adds the run's recorded settings to its results."""

    def add_results(self, results: RunResults, run: FittedRun) -> None:
        if run.settings is not None:
            results.add({"settings": run.settings})
