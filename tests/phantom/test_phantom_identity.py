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
        "truth": "b003ee77ef6c48d492f3ae9f0b255ee3f2a30cc712fc2c837b2230a151d6004a",
        "info": "0a481b7204daaeb0e83bedb541c9d949ef38b583a289a6df98edaf9d71869ddb",
        "files": "bd5555bb8dfabc11786cb1d3cbc353c87a5f679513e9bf137475c617fb33499d",
        "pixels": "637ec89ab9538aa3861129ca99670ae95a78ec77fdc10c06b4be3ccc8b7939c8",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "6bc306afecc0542259ba3d061897143ef3d58d826a14e7d3b0105898ff3deffd",
        "info": "ba88057973ce103139ddf1d0d7758c86ca50783302f9536916ed772ebdf130dc",
        "files": "288a80bb47e07ceb0ea9c77779cfbcc310971ef16b7918e93a7e0613fd6adf0a",
        "pixels": "667ef87d7f9befcc1e8c8eaea8afa792574185828632b82694be37b6005b2edf",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
