"""The table of config keys: the rules the settings check holds and the settings a run records
come from it, and a check written there is the one every layer uses."""

from __future__ import annotations

import pytest

from bone_age.evaluation.run_settings import experiment_settings, is_ignored
from bone_age.utils.config_keys import KEYS, key_problem

# Early stopping's keys change results but live under ``callbacks``: RunConfig records them as
# ``early_stopping.*`` (conf/callbacks/run_config.yaml).
RECORDED_ELSEWHERE = {"callbacks.early_stopping.patience", "callbacks.early_stopping.min_delta"}


@pytest.mark.parametrize("key", sorted(KEYS))
def test_a_key_is_recorded_exactly_when_the_table_says_it_changes_results(key):
    if key in RECORDED_ELSEWHERE:
        assert is_ignored(key)
        name = key.removeprefix("callbacks.")
        assert name in experiment_settings({name.split(".")[0]: {name.split(".")[1]: 1}})
        return
    assert is_ignored(key) is not KEYS[key].changes_results


def test_the_data_module_and_the_phantom_use_the_tables_rules():
    from bone_age.data.datamodule import DataError, loader_workers
    from bone_age.phantom.source import PhantomSource

    with pytest.raises(DataError) as err:
        loader_workers(-1)
    assert str(err.value) == key_problem("data.num_workers", -1)
    with pytest.raises(ValueError, match=r"^data.subjects must be a whole number >= 1, got None$"):
        PhantomSource(subjects=None)  # type: ignore[arg-type]
