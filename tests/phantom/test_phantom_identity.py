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
        "truth": "1ab40d59faa51dc2fbd9191d652590094ed1d9194da5d5da87fb81dbcc006e24",
        "info": "0a481b7204daaeb0e83bedb541c9d949ef38b583a289a6df98edaf9d71869ddb",
        "files": "742bc7ab13c09a140a3bcf254b50ce437a8c6026f81440e6073f2632a64cc513",
        "pixels": "cc128c509c09a789f50053922ac4c1647a023efd2851b56cf330e73123b6d5a3",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "966664997949bd16a9c44e92cf0c46c135debbc200a0c63c52774ed30fae83ff",
        "info": "ba88057973ce103139ddf1d0d7758c86ca50783302f9536916ed772ebdf130dc",
        "files": "95f7eee101db5b9fdb41a72b742310acd129c0c3af7e212e1f61de1d1111f3b7",
        "pixels": "34e491df26e2e82cdb64b4e3428a9f6a0d125c2a65d3c184eb4300a580e32e1f",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
