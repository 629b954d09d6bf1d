"""Multi-site cohorts stay byte-identical through speed work on the phantom.

test_phantom_sites pins one-site cohorts (the reference camera); these pin the other camera
paths (collimator scale, scatter, the 2048 x 512 matrix, single-frame RLE). The digests were
computed with the code before the speed work (commit c42eeee; recomputed for the arm/shoulder
change and phantom VERSION 2.1.0, which the merged speed work reproduces byte for byte; then
for VERSION 2.2.0, whose noise sampler, blur and anatomy changed the pixels on purpose; these
are VERSION 3.0.0's, whose anatomy, per-region uptake, bladder and background changed the pixels,
the realised counts in truth.csv and the version in phantom_info.json on purpose); a
change to the phantom's pixels, files or tables must recompute them on purpose
(tests/phantom/compare_cohorts.py checks whole cohorts against a reference checkout).
"""

from __future__ import annotations

import pytest

from bone_age.phantom import generate_cohort
from tests.phantom.test_phantom_sites import _digest

CASES = {
    "sites3": (3, 4, {"sites": 3}),
    "sites2_single_rle": (2, 9, {"sites": 2, "layout": "single-frame", "transfer_syntax": "rle"}),
}
DIGESTS = {
    "sites3": {
        "manifest": "8f7acaed10a997f971ddd2b9dd851e2cc2933c25fc2a5fd7a373f94f67d1a7fe",
        "truth": "df2dc7df0e73f848f240396d865eb06a8c83e56b84a64e32571c288dca9f1f0b",
        "info": "c56e85df23b2e64b9e0184b2bb8478cd679a92974049565b98a1c715938017aa",
        "files": "de2db45f93b9393a719e05121695c86a2e0fa93c97cfa030968886b4f80d51e4",
        "pixels": "d3d9d63d13200f1e0201b5e0d73803c69f92352f7a67911f9aeb628e70ae728e",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "44518833ed8c4877019f6da3ef061769249b8a2f8bc719f78e77ef6835f371f1",
        "info": "4b7f4a6b8267700bb4c5d689e1102e8729da43237dd254fb347dcbba627dc10a",
        "files": "59e0df49b977c4f32c76129014aebcbdb65dd78d4085d9821530eb6fe0e02ffb",
        "pixels": "975dffdb0f6b04bbbc8c8bab994b459d5e979f6445fe3ec2f1d5cd8a548cfd9a",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
