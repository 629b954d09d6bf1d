"""Multi-site cohorts stay byte-identical through speed work on the phantom.

test_phantom_sites pins one-site cohorts (the reference camera); these pin the other camera
paths (collimator scale, scatter, the 2048 x 512 matrix, single-frame RLE). The digests were
computed with the code before the speed work (commit c42eeee; recomputed for the arm/shoulder
change and phantom VERSION 2.1.0, which the merged speed work reproduces byte for byte; then
for VERSION 2.2.0, whose noise sampler, blur and anatomy changed the pixels on purpose; these
are VERSION 3.0.0's, whose anatomy, per-region uptake, bladder and background changed the pixels,
the realised counts in truth.csv and the version in phantom_info.json on purpose; then
VERSION 3.1.0's, v3's tail fix of the posterior views' view-rule scores: pixels, realised counts
and version again, manifests unchanged); a
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
        "truth": "39468fbf96d6c490ae1a327518534127fe129d43cbeed6279ca833621b923947",
        "info": "abf2a40a686743905a0c6bb3b7ac4539fda9926e62a64457c50b667c2d9e7e17",
        "files": "fb3e2fd22196fe237991ec808d69c6d52909cd9daf26567e223ce01a531d607e",
        "pixels": "8cff1a26278783a713e1c4504cc0458f67204928b60761029b1b36ba6a851698",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "e1459c72237d94341fc15b7d5acfd8e71bf6f9216553ecf4c45ee838de746dac",
        "info": "98bd8567c17af87b14746a202b4c47c5888367b1f8208da035333439c12e680f",
        "files": "991bc8506a6b4c3307671b57052e9c9b120ab10dc66132ec6d2a6dc019568949",
        "pixels": "893b29558e7416a06b60674a6b163234030685dfbab1c4c60f3dfac0cdb4747c",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
