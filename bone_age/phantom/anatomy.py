"""Parametric body: soft-tissue outline and skeleton, drawn into a depth-layered Canvas.

Landmarks are fractions of the (young) stature measured from the vertex, from standard
anthropometric proportions (acromion ~0.18 H, iliac crest ~0.41 H, hip ~0.48 H, knee ~0.715 H,
ankle ~0.96 H). Lateral offsets x are fractions of stature too; +x is the patient's left, which
is image right in the anterior frame. Depth fractions f: 0 = anterior skin, 1 = posterior skin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .effects import Effects
from .render import NCOLS, NROWS, PIXEL_MM, Canvas

# Trunk knots (fraction of stature): T1, T12, L5. Height loss compresses [T1, L5]; kyphosis
# additionally foreshortens [T1, T12] in the coronal projection.
Z_T1, Z_T12, Z_L5 = 0.185, 0.32, 0.43


@dataclass(frozen=True)
class Body:
    sex: str
    stature_mm: float  # young-adult stature, before age-related loss
    shoulder: float  # half biacromial breadth / stature
    thorax: float  # half thoracic width / stature
    pelvis: float  # half iliac breadth / stature
    girth: float  # soft-tissue scale (body habitus)
    depth_ratio: float  # trunk antero-posterior depth / width
    arm_abduction: float  # degrees
    hands_on_pelvis: bool
    leg_spread: float  # extra half-distance of the ankles / stature
    top_row: float  # vertex row before height loss (positioning)
    center_col: float
    breast: float  # breast size scale (0 for men)


def sample_body(rng: np.random.Generator, sex: str) -> Body:
    """Sex-specific body size and an age-independent pose."""
    f = sex == "F"
    h = rng.normal(1575.0, 60.0) if f else rng.normal(1700.0, 65.0)
    h = float(np.clip(h, 1400.0, 1950.0))
    h_px = h / PIXEL_MM
    top = 95.0 + rng.normal(0.0, 8.0)
    top = float(np.clip(top, 40.0, NROWS - 12.0 - h_px))
    return Body(
        sex=sex,
        stature_mm=h,
        shoulder=rng.normal(0.112 if f else 0.122, 0.005),
        thorax=rng.normal(0.082 if f else 0.088, 0.004),
        pelvis=rng.normal(0.090 if f else 0.083, 0.004),
        girth=float(np.exp(rng.normal(0.0, 0.12))),
        depth_ratio=rng.normal(0.62, 0.05),
        arm_abduction=rng.uniform(2.0, 14.0),
        hands_on_pelvis=bool(rng.random() < 0.2),
        leg_spread=rng.uniform(0.0, 0.03),
        top_row=top,
        center_col=NCOLS / 2 + rng.normal(0.0, 3.0),
        breast=float(rng.uniform(0.6, 1.4)) if f else 0.0,
    )


class Geometry:
    """Maps (z, x) stature fractions to (row, col) after height loss and kyphosis."""

    def __init__(self, body: Body, fx: Effects) -> None:
        self.h = body.stature_mm / PIXEL_MM
        self.cx = body.center_col
        sole = body.top_row + self.h
        loss_h = fx.height_loss_mm / PIXEL_MM
        # Chord/arc of the thoracic curve: sin(k/2)/(k/2), relative to a 40-degree spine.
        k = np.radians(fx.kyphosis)
        kyph = (1.0 - np.sin(k / 2) / (k / 2)) * (Z_T12 - Z_T1) * self.h
        seg = np.array([1.0 - Z_L5, Z_L5 - Z_T12, Z_T12 - Z_T1, Z_T1]) * self.h
        trunk = Z_L5 - Z_T1
        seg[1] -= loss_h * (Z_L5 - Z_T12) / trunk
        seg[2] -= loss_h * (Z_T12 - Z_T1) / trunk + kyph
        self._zk = np.array([0.0, Z_T1, Z_T12, Z_L5, 1.0])
        self._rk = sole - np.concatenate([np.cumsum(seg)[::-1], [0.0]])
        self.top = float(self._rk[0])

    def row(self, z: float) -> float:
        return float(np.interp(z, self._zk, self._rk))

    def col(self, x: float) -> float:
        return self.cx + x * self.h

    def px(self, frac: float) -> float:
        return frac * self.h


def draw_soft_tissue(cv: Canvas, body: Body, g: Geometry) -> None:
    """Body-thickness map (mm) of head, neck, trunk, limbs, plus breasts in women."""
    R, C, P, gi = g.row, g.col, g.px, body.girth
    cv.body_ellipse(R(0.065), C(0), P(0.068), P(0.052), P(0.11) * PIXEL_MM)
    cv.body_capsule(R(0.12), C(0), R(0.18), C(0), P(0.032), P(0.036), 1.0)
    wt = body.shoulder * 0.92 * gi**0.5
    # Start the trunk segment one radius below the shoulders so its rounded end sits there.
    cv.body_capsule(R(0.19 + wt), C(0), R(0.40), C(0), P(wt), P(wt * 0.95), body.depth_ratio)
    cv.body_ellipse(R(0.225), C(0), P(0.045), P(wt * 1.02), P(wt * 2 * body.depth_ratio) * PIXEL_MM)
    wp = (body.pelvis + 0.02) * gi**0.6
    cv.body_capsule(R(0.40), C(0), R(0.47), C(0), P(wp * 0.95), P(wp), body.depth_ratio * 0.95)
    for s in (-1, 1):
        hx, kx = s * 0.05, s * (0.032 + body.leg_spread * 0.5)
        ax = s * (0.035 + body.leg_spread)
        cv.body_capsule(R(0.48), C(hx), R(0.715), C(kx), P(0.05 * gi), P(0.03 * gi**0.5), 1.0)
        cv.body_capsule(R(0.715), C(kx), R(0.96), C(ax), P(0.03 * gi**0.5), P(0.016), 1.0)
        cv.body_ellipse(R(0.975), C(ax), P(0.022), P(0.02), P(0.05) * PIXEL_MM)
        sh, el, wr, hd = arm_points(body, s)
        cv.body_capsule(R(sh[0]), C(sh[1]), R(el[0]), C(el[1]), P(0.034 * gi**0.7),
                        P(0.028 * gi**0.7), 1.0)  # fmt: skip
        cv.body_capsule(R(el[0]), C(el[1]), R(wr[0]), C(wr[1]), P(0.028 * gi**0.7),
                        P(0.018), 1.0)  # fmt: skip
        cv.body_ellipse(R(hd[0]), C(hd[1]), P(0.045), P(0.018), P(0.025) * PIXEL_MM)
        if body.breast > 0:
            b = body.breast * gi
            cv.body_ellipse(R(0.285), C(s * 0.05), P(0.035 * b), P(0.045 * b),
                            P(0.05 * b) * PIXEL_MM, breast=True)  # fmt: skip


def arm_points(body: Body, s: int) -> tuple[tuple[float, float], ...]:
    """Shoulder, elbow, wrist and hand centre as (z, x) for side s (+1 = patient's left)."""
    a = np.radians(body.arm_abduction)
    sh = (0.195, s * body.shoulder)
    up = 0.185  # humerus length / stature
    el = (sh[0] + up * np.cos(a), sh[1] + s * up * np.sin(a))
    if body.hands_on_pelvis:
        wr = (0.47, s * 0.07)
    else:
        fa = 0.145
        wr = (el[0] + fa * np.cos(a * 0.7), el[1] + s * fa * np.sin(a * 0.7))
    hd = (wr[0] + 0.045, wr[1])
    return sh, el, wr, hd


def draw_skeleton(cv: Canvas, body: Body, g: Geometry, fx: Effects) -> None:
    """Bones with regional uptake modulated by the age effects."""
    R, C, P = g.row, g.col, g.px
    gu = fx.global_uptake
    axial = gu * fx.spine_pelvis_uptake
    shaft = gu * fx.shaft_uptake
    skull = gu * fx.skull_uptake
    kf = 1.0 - 0.004 * max(fx.kyphosis - 40.0, 0.0)  # flexed head looks shorter
    # Skull: calvarium shell, facial bones, mandible.
    cv.shell(R(0.062), C(0), P(0.060) * kf, P(0.046), 1.2 * skull, 0.5, inner=0.82)
    cv.ellipse(R(0.1), C(0), P(0.026), P(0.032), 0.45 * skull, 0.25)  # maxilla / face
    for s in (-1, 1):
        cv.capsule(R(0.112), C(s * 0.033), R(0.13), C(s * 0.006), P(0.005), P(0.005),
                   0.3 * skull, 0.3)  # fmt: skip
    # Spine: 7 cervical, 12 thoracic, 5 lumbar vertebrae; sacrum.
    levels = [(0.115 + i * (Z_T1 - 0.115) / 7, 0.011, 0.55) for i in range(7)]
    levels += [(Z_T1 + i * (Z_T12 - Z_T1) / 11, 0.014 + 0.0005 * i, 0.75) for i in range(12)]
    levels += [(Z_T12 + (i + 1) * (Z_L5 - Z_T12) / 5, 0.021, 0.95) for i in range(5)]
    upper_f = min(0.8, 0.66 + 0.002 * max(fx.kyphosis - 40, 0))  # kyphosis: spine backwards
    for i, (z, w, a) in enumerate(levels):
        ry = (R(z + 0.005) - R(z - 0.005)) * 0.85 + 1.0
        f = upper_f if 7 <= i < 14 else 0.68
        amp = a * (axial if i >= 14 else gu * (0.5 + 0.5 * fx.spine_pelvis_uptake))
        cv.ellipse(R(z), C(0), ry, P(w), amp, f)
        for s in (-1, 1):  # posterior elements (pedicles / facet joints)
            cv.ellipse(R(z), C(s * w * 0.75), ry * 0.6, P(0.005), 0.35 * amp, 0.85)
    cv.ellipse(R(0.465), C(0), P(0.035), P(0.03), 0.9 * axial, 0.8)
    for s in (-1, 1):  # sacroiliac joints
        cv.capsule(R(0.445), C(s * 0.028), R(0.475), C(s * 0.022), P(0.006), P(0.005),
                   1.0 * axial, 0.8)  # fmt: skip
    # Ribs: posterior half (deep) from the spine to the lateral edge, anterior half back to the
    # costochondral junction; anterior ends lie lower.
    for i in range(12):
        z0 = R(Z_T1 + i * (Z_T12 - Z_T1) / 11)
        zdrop = (R(Z_T12) - R(Z_T1)) * 0.32
        width = body.thorax * np.sin(np.pi * (0.25 + 0.75 * min(i, 8) / 8) / 2) * 1.02
        if i >= 9:
            width *= 1.0 - 0.08 * (i - 8)
        th = np.radians(np.linspace(-80.0, 60.0 if i < 10 else 10.0, 6))
        for s in (-1, 1):
            pts = [(z0 + zdrop * (t + np.radians(80)) / np.radians(140),
                    C(s * width * np.cos(t)), (1 - np.sin(t)) / 2) for t in th]  # fmt: skip
            for (y0, x0, f0), (y1, x1, f1) in zip(pts[:-1], pts[1:], strict=True):
                cv.capsule(y0, x0, y1, x1, P(0.0042), P(0.0042), 0.26 * gu, (f0 + f1) / 2)
    # Sternum, clavicles, scapulae.
    cv.ellipse(R(0.215), C(0), P(0.017), P(0.018), 0.7 * gu, 0.08)
    cv.capsule(R(0.235), C(0), R(0.31), C(0), P(0.010), P(0.008), 0.6 * gu, 0.08)
    cv.gauss(R(0.233), C(0), P(0.006), 0.8 * gu * fx.sternal_variant, 0.1)
    for s in (-1, 1):
        cv.gauss(R(0.199), C(s * 0.016), P(0.006), 0.45 * gu * fx.sternal_variant, 0.1)
        cv.capsule(R(0.198), C(s * 0.02), R(0.186), C(s * (body.shoulder - 0.01)), P(0.0055),
                   P(0.005), 0.5 * gu, 0.2)  # fmt: skip
        cv.ellipse(R(0.245), C(s * (body.shoulder - 0.045)), P(0.05), P(0.025), 0.35 * gu, 0.85,
                   angle=-s * 12.0)  # fmt: skip
        cv.capsule(R(0.215), C(s * 0.04), R(0.2), C(s * (body.shoulder - 0.01)), P(0.005),
                   P(0.006), 0.4 * gu, 0.85)  # fmt: skip
    # Pelvis: iliac wings, acetabula, pubic and ischial rami.
    for s in (-1, 1):
        px = body.pelvis
        cv.ellipse(R(0.44), C(s * (px - 0.03)), P(0.038), P(0.03), 0.55 * axial, 0.55,
                   angle=s * 25.0)  # fmt: skip
        cv.capsule(R(0.415), C(s * (px - 0.045)), R(0.43), C(s * px), P(0.006), P(0.006),
                   0.5 * axial, 0.5)  # fmt: skip
        hip = (R(0.478), C(s * 0.05))
        cv.ellipse(*hip, P(0.014), P(0.014), 0.8 * axial, 0.5)
        cv.capsule(*hip, R(0.5), C(s * 0.007), P(0.006), P(0.006), 0.55 * axial, 0.3)
        cv.capsule(*hip, R(0.512), C(s * 0.035), P(0.007), P(0.006), 0.5 * axial, 0.6)
    _draw_limbs(cv, body, g, gu, shaft)


def _draw_limbs(cv: Canvas, body: Body, g: Geometry, gu: float, shaft: float) -> None:
    R, C, P = g.row, g.col, g.px
    for s in (-1, 1):
        hx, kx = s * 0.05, s * (0.032 + body.leg_spread * 0.5)
        ax = s * (0.035 + body.leg_spread)
        # Femur: head/neck/trochanter, diaphysis, condyles; patella anterior.
        cv.capsule(R(0.478), C(hx), R(0.49), C(s * 0.07), P(0.008), P(0.01), 0.6 * gu, 0.5)
        cv.capsule(R(0.495), C(s * 0.068), R(0.69), C(kx), P(0.0085), P(0.008), 0.55 * shaft,
                   0.5)  # fmt: skip
        cv.ellipse(R(0.703), C(kx), P(0.014), P(0.02), 0.75 * gu, 0.5)
        cv.ellipse(R(0.7), C(kx), P(0.009), P(0.009), 0.3 * gu, 0.08)
        # Tibia (+ fibula), ankle, foot (toes towards the camera: foreshortened).
        cv.ellipse(R(0.728), C(kx), P(0.012), P(0.019), 0.7 * gu, 0.5)
        cv.capsule(R(0.735), C(kx), R(0.95), C(ax), P(0.0075), P(0.0065), 0.5 * shaft, 0.4)
        cv.capsule(R(0.74), C(kx + s * 0.016), R(0.95), C(ax + s * 0.013), P(0.003),
                   P(0.003), 0.3 * shaft, 0.6)  # fmt: skip
        cv.ellipse(R(0.958), C(ax), P(0.01), P(0.016), 0.6 * gu, 0.5)
        cv.ellipse(R(0.978), C(ax + s * 0.004), P(0.017), P(0.015), 0.4 * gu, 0.5)
        # Arm: humeral head, humerus, radius + ulna, carpus, metacarpals/fingers.
        sh, el, wr, hd = arm_points(body, s)
        cv.ellipse(R(sh[0]), C(sh[1]), P(0.014), P(0.013), 0.8 * gu, 0.5)
        cv.capsule(R(sh[0] + 0.01), C(sh[1]), R(el[0]), C(el[1]), P(0.0065), P(0.006),
                   0.45 * shaft, 0.5)  # fmt: skip
        for dx in (-0.006, 0.006):
            cv.capsule(R(el[0]), C(el[1] + dx), R(wr[0]), C(wr[1] + dx * 0.8), P(0.0035),
                       P(0.004), 0.35 * shaft, 0.5)  # fmt: skip
        cv.ellipse(R(wr[0] + 0.008), C(wr[1]), P(0.009), P(0.012), 0.7 * gu, 0.5)
        for k in range(4):
            dx = (k - 1.5) * 0.0055
            cv.capsule(R(wr[0] + 0.018), C(wr[1] + dx), R(hd[0] + 0.022), C(wr[1] + dx * 1.4),
                       P(0.0022), P(0.0018), 0.35 * gu, 0.5)  # fmt: skip


def draw_organs(cv: Canvas, g: Geometry, fx: Effects, bladder: float) -> None:
    """Kidneys (posterior, age-related retention) and bladder (anterior, variable filling)."""
    R, C, P = g.row, g.col, g.px
    for s in (-1, 1):
        cv.ellipse(R(0.345 + 0.006 * (s > 0)), C(s * 0.04), P(0.03), P(0.017),
                   0.12 * fx.renal_retention, 0.72, angle=-s * 12.0)  # fmt: skip
    r = P(0.02) * bladder ** (1 / 3)
    cv.ellipse(R(0.485) - 0.3 * r, C(0), r * 0.85, r * 1.1, 2.0 * bladder ** (1 / 3), 0.3)


# Candidate degenerative sites as (z, x, f, sigma-fraction); order is the site index.
def degenerative_sites(body: Body) -> list[tuple[float, float, float, float]]:
    sites = []
    for s in (-1, 1):
        kx = s * (0.032 + body.leg_spread * 0.5)
        ax = s * (0.035 + body.leg_spread)
        sh, el, wr, hd = arm_points(body, s)
        sites += [
            (0.712, kx - 0.01, 0.5, 0.006),  # knee, medial/lateral compartments
            (0.712, kx + 0.01, 0.5, 0.006),
            (0.478, s * 0.057, 0.5, 0.007),  # hip (superolateral acetabulum)
            (0.19, s * (body.shoulder - 0.012), 0.4, 0.006),  # acromioclavicular
            (sh[0], sh[1], 0.5, 0.007),  # glenohumeral
            (wr[0] + 0.012, wr[1] - s * 0.01, 0.5, 0.004),  # first carpometacarpal
            (hd[0] + 0.01, wr[1], 0.5, 0.004),  # finger joints
            (0.97, ax - s * 0.006, 0.5, 0.005),  # first MTP / midfoot
            (0.985, ax + s * 0.006, 0.5, 0.005),
            (0.955, ax, 0.5, 0.005),  # ankle
        ]
    for z in (0.30, 0.35, 0.39, 0.42):  # vertebral body osteophytes (mid depth)
        sites.append((z, 0.02 * (1 if z > 0.36 else -1), 0.65, 0.006))
    return sites


def facet_sites() -> list[tuple[float, float]]:
    """Lumbar facet joints L2/3..L5/S1 on both sides as (z, x)."""
    return [(z, s * 0.017) for z in (0.365, 0.387, 0.409, 0.431) for s in (-1, 1)]
