"""Table 1 figures on a hand-computed case."""

import math

import pytest

from bone_age.evaluation.metrics import age_metrics


def test_mae_sd_and_r_on_a_known_case():
    m = age_metrics([42.0, 50.0, 61.0], [40.0, 53.0, 60.0])  # errors 2, 3, 1
    assert m["mae"] == pytest.approx(2.0)
    assert m["mae_sd"] == pytest.approx(1.0)  # sample SD of 2, 3, 1
    # deviations (-9, -1, 10) and (-11, 2, 9): r = 187 / sqrt(182 * 206)
    assert m["pearson_r"] == pytest.approx(187 / math.sqrt(182 * 206))


def test_r_is_undefined_for_constant_predictions():
    assert math.isnan(age_metrics([60.0, 60.0], [40.0, 70.0])["pearson_r"])
