"""The phantom camera's noise and depth-dependent blur."""

from __future__ import annotations

import numpy as np
import pytest

from bone_age.phantom.render import SIGMAS, Canvas, camera, poisson_counts


def test_poisson_counts_have_the_poisson_law_of_signal_plus_background():
    rng = np.random.default_rng(0)
    levels = np.array([0.0, 0.3, 3.0, 40.0], np.float32)
    signal = np.repeat(levels, 40_000).reshape(400, 400)
    signal[0, 0] = -1e-6  # rounding noise below zero counts as no signal
    counts = poisson_counts(signal, 0.7, rng)
    assert counts.shape == signal.shape and counts.dtype == np.int64
    for level in levels:
        got = counts[signal == level].astype(np.float64)
        lam = level + 0.7
        assert got.mean() == pytest.approx(lam, rel=0.03)
        assert got.var() == pytest.approx(lam, rel=0.05)  # Poisson: variance = mean
        assert (got == 0).mean() == pytest.approx(np.exp(-lam), abs=0.01)
    # No background: pixels without signal stay empty, the others keep their law.
    bare = poisson_counts(signal, 0.0, rng)
    assert not bare[signal <= 0].any()
    assert bare[signal == 3.0].mean() == pytest.approx(3.0, rel=0.03)


def _spread(depth: float, view: int) -> float:
    """Row standard deviation (px) of a point source at depth fraction ``depth`` in one view
    (0 anterior, 1 posterior); no body, so nothing attenuates it."""
    cv = Canvas()
    cv.gauss(512, 128, 0.5, 1.0, depth)
    frames = camera(cv, 0.0, 2e5, 0.0, (0, 1024, 0, 256), np.random.default_rng(1))
    img = frames[view].astype(np.float64)
    w = img / img.sum()
    return float(np.sqrt((w * (np.arange(1024)[:, None] - 512) ** 2).sum()))


@pytest.mark.parametrize("depth,view,group", [(0.1, 0, 0), (0.5, 0, 1), (0.9, 0, 2),
                                              (0.9, 1, 0), (0.1, 1, 2)])  # fmt: skip
def test_blur_grows_with_the_distance_from_the_detector(depth, view, group):
    assert _spread(depth, view) == pytest.approx(np.hypot(0.5, SIGMAS[group]), rel=0.04)
