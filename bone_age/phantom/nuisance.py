"""Age- and sex-independent nuisance findings of an oncology population.

Metastases, injection-site activity, urine contamination, bladder filling, count level and
background are drawn from one subject RNG without looking at age, sex or b, so they carry no
age signal (they only make the task harder, as in clinical data).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .body_plan import Body, Geometry, arm_points
from .render import Canvas

P_METASTATIC = 0.25
P_INJECTION = 0.6
P_CONTAMINATION = 0.08
# v3: fuller, hotter bladders (log filling ~ N(0.3, 0.8), v2.3: N(0, 0.6)): real views hold more of
# their counts in the pelvis (docs/phantom.md).
BLADDER_LOG_MEAN = 0.3


@dataclass(frozen=True)
class Nuisance:
    counts_ant: float  # expected total counts of the anterior view
    background: float  # counts / pixel inside the scanned field
    bladder: float  # filling (relative volume)
    metastases: tuple[tuple[float, float, float, float, float], ...]  # z, x, f, sigma, amp
    injection: tuple[int, float, float] | None  # side, position along forearm (0..1), amp
    contamination: tuple[float, float, float] | None  # z, x, amp

    @property
    def n_metastases(self) -> int:
        return len(self.metastases)


def _metastasis(rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    region = rng.choice(5, p=[0.35, 0.25, 0.2, 0.1, 0.1])
    s = rng.choice([-1, 1])
    if region == 0:  # spine
        z, x, f = rng.uniform(0.12, 0.46), rng.normal(0, 0.006), 0.7
    elif region == 1:  # ribs
        z, x, f = rng.uniform(0.19, 0.33), s * rng.uniform(0.03, 0.085), rng.uniform(0.1, 0.9)
    elif region == 2:  # pelvis
        z, x, f = rng.uniform(0.41, 0.51), s * rng.uniform(0.02, 0.09), 0.55
    elif region == 3:  # skull
        z, x, f = rng.uniform(0.01, 0.1), rng.uniform(-0.04, 0.04), rng.uniform(0.2, 0.8)
    else:  # proximal femur
        z, x, f = rng.uniform(0.48, 0.58), s * rng.uniform(0.055, 0.07), 0.5
    return float(z), float(x), float(f), float(rng.uniform(0.003, 0.009)), float(
        rng.uniform(0.8, 3.5)
    )


def sample_nuisance(rng: np.random.Generator) -> Nuisance:
    mets: tuple = ()
    if rng.random() < P_METASTATIC:
        n = int(min(rng.geometric(0.15), 40))
        mets = tuple(_metastasis(rng) for _ in range(n))
    injection = None
    if rng.random() < P_INJECTION:
        injection = (int(rng.choice([-1, 1])), float(rng.uniform(0.0, 1.1)),
                     float(np.exp(rng.normal(0.0, 1.0))))  # fmt: skip
    contamination = None
    if rng.random() < P_CONTAMINATION:
        contamination = (float(rng.uniform(0.5, 0.75)), float(rng.uniform(-0.06, 0.06)),
                         float(np.exp(rng.normal(0.5, 0.8))))  # fmt: skip
    return Nuisance(
        counts_ant=float(np.exp(rng.uniform(np.log(0.6e6), np.log(5.5e6)))),
        background=float(rng.uniform(0.1, 0.8)),
        bladder=float(np.exp(rng.normal(BLADDER_LOG_MEAN, 0.8))),
        metastases=mets,
        injection=injection,
        contamination=contamination,
    )


def draw_nuisance(cv: Canvas, body: Body, g: Geometry, nz: Nuisance) -> None:
    R, C, P = g.row, g.col, g.px
    for z, x, f, sig, amp in nz.metastases:
        cv.gauss(R(z), C(x), P(sig), amp, f)
    if nz.injection is not None:
        side, t, amp = nz.injection
        _, el, wr, hd = arm_points(body, side)
        if t <= 1.0:  # antecubital fossa .. wrist
            z, x = el[0] + t * (wr[0] - el[0]), el[1] + t * (wr[1] - el[1])
        else:  # back of the hand
            z, x = hd
        cv.gauss(R(z), C(x), P(0.004), 1.5 * amp, 0.3)
    if nz.contamination is not None:
        z, x, amp = nz.contamination
        cv.gauss(R(z), C(x), P(0.006), amp, 0.05)
