"""Multi-site cohorts stay byte-identical through speed work on the phantom.

test_phantom_sites pins one-site cohorts (the reference camera); these pin the other camera
paths (collimator scale, scatter, the 2048 x 512 matrix, single-frame RLE). The digests were
computed with the code before the speed work (commit c42eeee; recomputed for the arm/shoulder
change and phantom VERSION 2.1.0, which the merged speed work reproduces byte for byte; then
for VERSION 2.2.0, whose noise sampler, blur and anatomy changed the pixels on purpose); a
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
        "truth": "c2305b35a8dd0fa4f3ed968ae7aab190f6babf41441eacf4ebf3f4c205be6a82",
        "info": "72989315dddf31fec7728d7fec5e637a0e4be47de0f59aa034876e5bfc7f9a9d",
        "files": "933a0c1a1e8785f6e1e7a54e1f761406e02e04cc7cdd21291fe90d36d2b7f15d",
        "pixels": "484262fc671c524b39eb7342eaee5330aa4af5f6142b745db665611790c65b34",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "d3f2639c8a0fcd1d159e3a7f53daa11782b100b2c22ed53263a1ea41c5a3c28f",
        "info": "7975df537a73d2554da9c3ff14d3a6532f1575a3deb5d0558b7adad73313d7f2",
        "files": "5413c6597395520280b8b15e3b2a11eb253476cee8b39a31a3267daa63a9b418",
        "pixels": "cb3acd59e917e5f6d2dac121a66bb93420145009083c5d2198363dfebd3523fd",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
