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
        "truth": "dbb37a634c16f814b5cf02035a6187349c3b2970e9f7548da393e3c3f9012294",
        "info": "72989315dddf31fec7728d7fec5e637a0e4be47de0f59aa034876e5bfc7f9a9d",
        "files": "318e74d061c060add9f9b86df5a09fe46db0e6b16df2dc39c59a31e777a3db6b",
        "pixels": "e03efbe04ee32bfaf32fe8e297fdbfd534b62266e71856dca0709643f652f9a8",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "d45d4bf42cdb0b2df70543c19564fc91dcda9f6b008d5f8b20f2a1bdd632e99f",
        "info": "7975df537a73d2554da9c3ff14d3a6532f1575a3deb5d0558b7adad73313d7f2",
        "files": "c44efedc0b26b95955d0e89be2e12b377b7073103595ab34bbc3812f0823329e",
        "pixels": "129e42bd591ef32db1e38fb01795a8b5bfd4dea85d675a6583e9d8f930477945",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
