"""Multi-site cohorts stay byte-identical through speed work on the phantom.

test_phantom_sites pins one-site cohorts (the reference camera); these pin the other camera
paths (collimator scale, scatter, the 2048 x 512 matrix, single-frame RLE). The digests were
computed with the code before the speed work (commit c42eeee); a change to the phantom's
pixels, files or tables must recompute them on purpose (tests/phantom/compare_cohorts.py checks
whole cohorts against a reference checkout).
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
        "truth": "4adbc7ff7088b2db853ff72010f3e63c645c550350993fe1217bfe5ec13c820b",
        "info": "cb01b236c8870ac3c1d594b9c8a0d7531303c18b45c28c09d1a3639e115bbac0",
        "files": "29469782ca655ddc28f5b015c62c147212b051d746c4e1f4216bf4b25902c539",
        "pixels": "a2e4f57800c801ee8f41f87447cb3e7681c7b8443a90e0cf85a866571f2f926b",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "d8f73e044a765fde2c6430581174d8cb44272600f0e3944055bd88cd62e8d2cb",
        "info": "4c91027d4cf8267cfd85242d43b259daefa6d6a74fba34a3c8ae74c2446f01f5",
        "files": "f5c09869afe3eb4350b743b5f7f3a0a93ba241094eec7031308cf9e8f66ee061",
        "pixels": "ec9b5768204d7eec24bf61238d4e3e0606a8d1e5e45e6707b6662e05d869b8c8",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
