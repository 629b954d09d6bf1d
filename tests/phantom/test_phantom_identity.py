"""Multi-site cohorts stay byte-identical through speed work on the phantom.

test_phantom_sites pins one-site cohorts (the reference camera); these pin the other camera
paths (collimator scale, scatter, the 2048 x 512 matrix, single-frame RLE). The digests were
computed with the code before the speed work (commit c42eeee; recomputed for the arm/shoulder
change and phantom VERSION 2.1.0, which the merged speed work reproduces byte for byte); a
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
        "truth": "bcfee9cc76fffd18c35ebf77fa588e1e1b8394b0f6b3cedf3a81972955389417",
        "info": "189e9aa886d1acb484034f2b2ee1ac4ccf3376defce6063d894ca48a09319006",
        "files": "06c6ae31c6fa4d5bb68e3761d25395e543767c0a1b22d4b1ca606bdb77a4ee67",
        "pixels": "e037988bca3225b9c6d027b5f67b467b166e21fa3fdd4df581c37d8a54dfcd7c",
    },
    "sites2_single_rle": {
        "manifest": "7799b6d71312202c02791f70aa9220b97b1a22d680ff12d10bec28d6349c1b92",
        "truth": "1cb18c30b22285226bc086365bf9ebe7fa921c81bd1f1afb71c315c462ebab65",
        "info": "d1e71c0cf3977009bfaff77b333fc8399088b09d02c3c9f014c8ed007f76b0c3",
        "files": "0d4767c22cd754df4e6397f2d9812ea43c52bc6df6c2664663adbb9d6652909b",
        "pixels": "50b5595621169ed7e8d96cef08b939bb9a8ccc60eda71a6204e6f97c4a9c9fe8",
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_multi_site_cohort_is_byte_identical_to_before_speed_work(case, tmp_path):
    n, seed, opts = CASES[case]
    generate_cohort(tmp_path, n, seed, workers=1, progress=False, **opts)
    assert _digest(tmp_path) == DIGESTS[case]
