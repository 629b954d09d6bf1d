"""A sweep's values are checked before its first job (issue 33 item 5): every job's composed
config goes through the settings check in the Hydra callback that starts the sweep."""

from __future__ import annotations

import pytest
from hydra import initialize_config_dir

from bone_age.training.settings_check import SettingsCheck, SettingsError, check_sweep, sweep_jobs
from tests.conftest import CONF_DIR, cohort_rows, write_rows


@pytest.fixture(scope="module")
def three_sites(cohort, tmp_path_factory):
    rows = cohort_rows(cohort)
    for i, row in enumerate(rows):
        row["site"] = f"SITE-{i % 3}"
    return write_rows(tmp_path_factory.mktemp("sites") / "m.csv", rows)


def _sweep(overrides: list[str]):
    """The master config of ``python -m bone_age.run -m OVERRIDES``, as Hydra composes it."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    return GlobalHydra.instance().config_loader().load_configuration(
        config_name="config", overrides=overrides, run_mode=RunMode.MULTIRUN)


def test_a_leave_one_site_out_sweep_over_folds_the_cohort_lacks_stops_before_any_run(
        three_sites, tmp_path, capsys):
    base = ["experiment=table1_cpu", "data=manifest", f"data.manifest={three_sites}",
            "data.split=site", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = _sweep(base)
        assert len(sweep_jobs(config)) == 30
        with pytest.raises(SettingsError) as err:
            check_sweep(config)
        message = str(err.value)
        assert message.startswith("data.fold must be in 0..2 (data.split=site: one fold per "
                                  "site, 3 sites), got 3")
        assert "sweep run 4 of 30" in message and "data.fold=3" in message
        assert "\n" not in message
        # The Hydra callback that starts the sweep: one line, exit 2, before any job.
        with pytest.raises(SystemExit) as stop:
            SettingsCheck().on_multirun_start(config=config)
        assert stop.value.code == 2
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith("bone-age run: data.fold must be in 0..2")
        # The documented combination: one fold per site.
        config = _sweep([*base, "data.fold=0,1,2"])
        assert len(sweep_jobs(config)) == 18
        check_sweep(config)
    assert not (tmp_path / "sweep").exists()


def test_a_bad_value_in_any_job_is_found_before_the_first(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        config = _sweep(["experiment=quickstart", "data.batch_size=8,0",
                         f"hydra.sweep.dir={tmp_path / 'sweep'}"])
        with pytest.raises(SettingsError, match=r"^data.batch_size must be a whole number >= 1, "
                                                r"got 0 \(sweep run 2 of 2: "):
            check_sweep(config)
