"""Parametric body: pose, soft-tissue outline, organs and candidate lesion sites.

Landmarks are fractions of the (young) stature measured from the vertex, from standard
anthropometric proportions (C7 ~0.15 H, acromion ~0.17-0.18 H supine, iliac crest ~0.41 H,
hip ~0.48 H, knee ~0.715 H, ankle ~0.96 H). Lateral offsets x are fractions of stature too;
+x is the patient's left, which is image right in the anterior frame. Depth fractions f:
0 = anterior skin, 1 = posterior skin. The skeleton is drawn by :mod:`.skeleton`.

Pose as on a clinical whole-body scan: supine, arms along the body with the hands beside the
thighs (sometimes resting on them), feet plantar-flexed and turned out, so they project below
the ankles; shoulders and arms vary left and right, so scans are not mirror-symmetric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .effects import Effects
from .render import NCOLS, NROWS, PIXEL_MM, Canvas

# Trunk knots (fraction of stature): T1, T12, L5. Height loss compresses [T1, L5]; kyphosis
# additionally foreshortens [T1, T12] in the coronal projection.
Z_T1, Z_T12, Z_L5 = 0.185, 0.32, 0.43
# Soft-tissue tracer concentration relative to the trunk: muscle-poor distal limbs hold less
# (soft tissue on real scans is graded, brightest over the trunk).
GAIN = {"head": 0.85, "neck": 0.9, "trunk": 1.0, "abdomen": 1.12, "arm": 0.85, "thigh": 0.72,
        "leg": 0.55}
# v3's individual differences (``sample_body``), widened and moved until >= 90% of the real
# views of the dev half of ../shared/data/real-renders lie inside the phantom's 1-99% range on
# each shape measure (docs/phantom.md): soft tissue of trunk, abdomen, thighs and legs as
# (median multiplier, log-sd); real scans hold less of their counts in the thighs and the feet
# and more in the legs than v2.3 did.
# v3 tail fix: abdomen (0.65, 0.4), was (0.6, 0.45).
TISSUE_LAW = ((0.62, 0.12), (0.65, 0.4), (0.55, 0.5), (1.1, 0.45))
HEAD_SCALE_MEAN = -0.09  # log: real heads are a little narrower for their height than v2.3's
FOOT_GAIN_MEAN = 0.4
# Skull uptake beside its age effect (log-mean, log-sd). v3 tail fix: (0.1, 0.35), was
# (-0.2, 0.55): hot skulls raise the posterior face rank, and with it the view rule's score, of
# far more phantom posterior views than real ones (docs/phantom.md); narrower still loses the
# real posterior views with little of their counts in the head.
SKULL_GAIN_LAW = (0.1, 0.35)
# v3 tail fix: the back muscles beside the T7-L2 spine (rows of the view rule's spine cue, half
# width as a stature fraction) take the trunk's soft-tissue multiplier, not the abdomen's: a
# person's abdominal fat and perfusion barely reach the paraspinal muscles, and a faint abdomen
# ranked the phantom's posterior spine strip too low.
PARASPINAL_HALF, PARASPINAL_Z = 0.04, (0.25, 0.38)
BLADDER_UPTAKE = 3.5  # v3 (v2.3: 2.0); see nuisance.BLADDER_LOG_MEAN
CLOUD_BLOCK, CLOUD_SD = 32, 0.12  # px, log-sd of the patchy soft-tissue concentration
LIMB_FLAT = 0.45  # limb cross-sections are flatter-sided than ellipses: thickness = chord ** 0.45
ARM_FLAT = 0.7  # arms less so: the real arm's counts fall off gradually towards its edges


@dataclass(frozen=True)
class Body:
    sex: str
    stature_mm: float  # young-adult stature, before age-related loss
    shoulder: float  # half biacromial breadth / stature
    thorax: float  # half thoracic width / stature
    pelvis: float  # half iliac breadth / stature
    girth: float  # soft-tissue scale (body habitus)
    depth_ratio: float  # trunk antero-posterior depth / width
    arm_abduction: float  # degrees, mean of both sides
    hands_on_pelvis: bool  # hands resting on the upper thighs instead of beside them
    leg_spread: float  # extra half-distance of the ankles / stature
    top_row: float  # vertex row before height loss (positioning)
    center_col: float
    breast: float  # breast size scale (0 for men)
    shoulder_z: float = 0.178  # acromion level / stature (shrugged shoulders sit higher)
    arm_asym: float = 0.0  # left minus right abduction, degrees
    foot_turn: tuple[float, float] = (20.0, 20.0)  # external rotation (right, left), degrees
    foot_len: float = 0.05  # projected foot length below the ankle / stature
    # v3: how one person differs from another beyond size and pose (issue 32: the real
    # population's widths and count shares spread wider than v2.3's); age-independent.
    head_scale: float = 1.0  # head breadth (x the standard proportion)
    calf_scale: float = 1.0  # breadth of the lower legs (x the standard proportion)
    tissue: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # soft-tissue concentration
    # of trunk, abdomen, thighs and legs (x GAIN): perfusion, fat and muscle differ by person
    skull_gain: float = 1.0  # the skull's uptake beside its age effect (calvarial thickness)
    foot_gain: float = 1.0  # the feet's uptake (footwear-free feet differ: arthrosis, gout)


def tissue_gains(body: Body) -> dict[str, float]:
    """GAIN with the person's own soft-tissue concentrations (``Body.tissue``)."""
    trunk, abdomen, thigh, leg = body.tissue
    return {**GAIN, "trunk": GAIN["trunk"] * trunk, "abdomen": GAIN["abdomen"] * abdomen,
            "thigh": GAIN["thigh"] * thigh, "leg": GAIN["leg"] * leg}  # fmt: skip


def sample_body(rng: np.random.Generator, sex: str, person: np.random.Generator) -> Body:
    """Sex-specific body size and an age-independent pose.

    Args:
        rng: the subject's stream (size and pose, drawn as in v2.3 though from wider laws).
        sex: "F" or "M".
        person: the subject's own stream for v3's individual differences (head, soft tissue,
            skull and foot uptake), so that the draws after the body (effects, nuisance) are
            those of v2.3 and the age model's realised values are unchanged.
    """
    f = sex == "F"
    h = rng.normal(1590.0, 65.0) if f else rng.normal(1720.0, 70.0)
    h = float(np.clip(h, 1400.0, 1950.0))
    h_px = h / PIXEL_MM
    top = 80.0 + rng.normal(0.0, 8.0)
    top = float(np.clip(top, 30.0, NROWS - 40.0 - 1.08 * h_px))
    return Body(
        sex=sex,
        stature_mm=h,
        shoulder=rng.normal(0.094 if f else 0.103, 0.013),
        thorax=rng.normal(0.082 if f else 0.088, 0.004),
        pelvis=rng.normal(0.090 if f else 0.083, 0.004),
        girth=float(np.exp(rng.normal(-0.03, 0.22))),
        depth_ratio=rng.normal(0.62, 0.05),
        arm_abduction=rng.uniform(1.0, 9.0),
        hands_on_pelvis=bool(rng.random() < 0.15),
        leg_spread=rng.uniform(-0.02, 0.13),
        top_row=top,
        center_col=NCOLS / 2 + rng.normal(0.0, 15.0),
        breast=float(rng.uniform(0.6, 1.4)) if f else 0.0,
        shoulder_z=float(rng.uniform(0.13, 0.21)),
        arm_asym=float(rng.normal(0.0, 6.0)),
        foot_turn=(float(rng.uniform(10.0, 80.0)), float(rng.uniform(10.0, 80.0))),
        foot_len=float(rng.uniform(0.035, 0.08)),
        head_scale=float(np.exp(person.normal(HEAD_SCALE_MEAN, 0.09))),
        tissue=tuple(float(np.exp(person.normal(np.log(m), sd)))  # type: ignore[arg-type]
                     for m, sd in TISSUE_LAW),  # fmt: skip
        skull_gain=float(np.exp(person.normal(*SKULL_GAIN_LAW))),
        foot_gain=float(np.exp(person.normal(np.log(FOOT_GAIN_MEAN), 1.1))),
        calf_scale=float(np.exp(person.normal(-0.08, 0.2))),
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
        # Beyond the sole (projected feet) the scale of the legs continues.
        if z > 1.0:
            return float(self._rk[-1] + (z - 1.0) * self.h)
        return float(np.interp(z, self._zk, self._rk))

    def col(self, x: float) -> float:
        return self.cx + x * self.h

    def px(self, frac: float) -> float:
        return frac * self.h


def leg_points(body: Body, s: int) -> tuple[tuple[float, float], ...]:
    """Hip, knee, ankle and toe tips as (z, x) for side s (+1 = patient's left).

    Args:
        body: the subject's body and pose.
        s: side, -1 (patient's right) or +1 (left).
    """
    kx = s * (0.036 + body.leg_spread * 0.5)
    ax = s * (0.04 + body.leg_spread)
    turn = np.radians(body.foot_turn[(s + 1) // 2])
    toe = (0.965 + body.foot_len * np.cos(turn), ax + s * body.foot_len * np.sin(turn))
    return (0.478, s * 0.05), (0.715, kx), (0.958, ax), toe


ARM_GAP = 0.005  # skin gap between a hanging arm and the trunk / thigh, fraction of stature
ARM_MAX_ABDUCTION = 22.0  # degrees: a very wide body's arms rest on its flanks instead
ARM_R = (0.033, 0.029, 0.018, 0.021)  # soft-tissue radii: shoulder, elbow, wrist, hand (x girth)


def arm_radii(body: Body) -> tuple[float, float, float, float]:
    """Soft-tissue radii of the arm at shoulder, elbow, wrist and hand (fractions of stature)."""
    gi = body.girth**0.7
    return ARM_R[0] * gi, ARM_R[1] * gi, ARM_R[2], ARM_R[3]


def trunk_segments(body: Body) -> list[tuple[float, float, float, float, float, float]]:
    """Chest, abdomen and the two thighs as (z0, x0, z1, x1, r0, r1) capsules (stature
    fractions): the outline that the hanging arms lie beside."""
    gi = body.girth
    wc = chest_half(body)
    wp = (body.pelvis + 0.02) * gi**0.6
    segs = [(body.shoulder_z + 0.01 + wc, 0.0, 0.40, 0.0, wc, wc * 0.9),
            (0.40, 0.0, 0.49, 0.0, wp * 0.95, wp * 0.85)]  # fmt: skip
    for s in (-1, 1):
        hip, knee, _, _ = leg_points(body, s)
        segs.append((0.48, hip[1] + s * 0.005, knee[0], knee[1], 0.055 * gi, 0.032 * gi**0.5))
    return segs


def chest_half(body: Body) -> float:
    """Half-width of the chest below the armpits: biacromial half-breadth less the shoulder
    joint's overhang (the arms hang beside the chest, not in front of it)."""
    return (body.shoulder - 0.028) * body.girth**0.5


def trunk_half(body: Body, z: float) -> float:
    """Half-width (stature fraction, from the midline) of the trunk and thighs' outline at
    level z; 0 above the chest."""
    w = 0.0
    for z0, x0, z1, x1, r0, r1 in trunk_segments(body):
        if z0 <= z <= z1:
            t = (z - z0) / (z1 - z0)
            w = max(w, abs(x0 + t * (x1 - x0)) + r0 + t * (r1 - r0))
        else:  # rounded ends
            ze, xe, re = (z0, x0, r0) if z < z0 else (z1, x1, r1)
            if abs(z - ze) < re:
                w = max(w, abs(xe) + float(np.sqrt(re * re - (z - ze) ** 2)))
    return w


def arm_points(body: Body, s: int) -> tuple[tuple[float, float], ...]:
    """Shoulder, elbow, wrist and hand centre as (z, x) for side s (+1 = patient's left).

    The arm hangs beside the trunk with a skin gap down to the hand (a wider body abducts its
    arms more, up to ``ARM_MAX_ABDUCTION``), unless the hands rest on the thighs.
    """
    _, r_el, r_wr, r_hd = arm_radii(body)
    a = np.radians(max(body.arm_abduction + s * body.arm_asym / 2, 0.0))
    sh = (body.shoulder_z + 0.012, s * body.shoulder)
    up = 0.185  # humerus length / stature
    z_el = sh[0] + up * np.cos(a)
    need = (trunk_half(body, z_el) + r_el + ARM_GAP - body.shoulder) / up
    a = min(max(a, np.arcsin(np.clip(need, 0.0, 1.0))), max(a, np.radians(ARM_MAX_ABDUCTION)))
    el = (sh[0] + up * np.cos(a), sh[1] + s * up * np.sin(a))
    fa = 0.145
    if body.hands_on_pelvis:  # the hand lies on the thigh, inside its outline
        wr = (0.49, s * min(0.095, trunk_half(body, 0.54) - r_hd))
    else:
        wr = (el[0] + fa * np.cos(a * 0.5), el[1] + s * fa * np.sin(a * 0.5))
        # Wrist and hand clear the hip and thigh too (the forearm turned out a little more).
        need = max(trunk_half(body, wr[0]) + r_wr, trunk_half(body, wr[0] + 0.05) + r_hd)
        reach = abs(el[1]) + fa * np.sin(np.radians(ARM_MAX_ABDUCTION))
        wr = (wr[0], s * max(abs(wr[1]), min(need + ARM_GAP, reach)))
    hd = (wr[0] + 0.05, wr[1])
    return sh, el, wr, hd


def drawn_arm_abduction(body: Body) -> float:
    """The upper arms' angle from the body's long axis as drawn (degrees, mean of both sides):
    the sampled pose, opened further where the trunk is wide (``arm_points``)."""
    angles = []
    for s in (-1, 1):
        sh, el, _, _ = arm_points(body, s)
        angles.append(np.degrees(np.arctan2(abs(el[1] - sh[1]), el[0] - sh[0])))
    return float(np.mean(angles))


def cloudy_gain(cv: Canvas, rng: np.random.Generator) -> None:
    """Patchy soft-tissue concentration (perfusion, fat and muscle vary within a body part).

    A coarse log-normal field in blocks; the camera's box average over the body (GAIN_BOX)
    turns it into smooth clouds of ~10-15 cm.

    Args:
        cv: canvas whose soft-tissue gain map is modulated in place.
        rng: the subject's tissue random stream.
    """
    shape = (-(-NROWS // CLOUD_BLOCK) + 1, -(-NCOLS // CLOUD_BLOCK) + 1)
    field = np.exp(rng.normal(0.0, CLOUD_SD, shape)).astype(np.float32)
    full = np.repeat(np.repeat(field, CLOUD_BLOCK, 0), CLOUD_BLOCK, 1)
    oy, ox = rng.integers(0, CLOUD_BLOCK, 2)  # grid phase: no fixed block boundaries
    cv.gain *= full[oy : oy + NROWS, ox : ox + NCOLS]


def draw_soft_tissue(cv: Canvas, body: Body, g: Geometry) -> None:
    """Body-thickness map (mm) and soft-tissue gain of head, neck, trunk, limbs, breasts."""
    R, C, P, gi = g.row, g.col, g.px, body.girth
    gn = tissue_gains(body)
    cv.body_ellipse(R(0.065), C(0), P(0.068), P(0.054 * gi**0.3 * body.head_scale),
                    P(0.11) * PIXEL_MM,
                    gain=gn["head"])  # fmt: skip
    cv.body_capsule(R(0.12), C(0), R(0.17), C(0), P(0.034), P(0.04), 1.0, gn["neck"])
    sz, wc = body.shoulder_z, chest_half(body)
    r_sh, r_el, r_wr, r_hd = arm_radii(body)
    chest, abdomen, *thighs = trunk_segments(body)
    for s in (-1, 1):  # shoulder: trapezius sloping from the neck to the acromion...
        sh, el, wr, hd = arm_points(body, s)
        # (as thick front to back as the neck, so no thin wedge shows between head and shoulder)
        cv.body_capsule(R(sz - 0.03), C(s * 0.03), R(sz + 0.012), C(s * (body.shoulder - 0.02)),
                        P(0.02), P(0.024 * gi**0.5), 1.4, gn["trunk"])  # fmt: skip
        # ...and the deltoid, a round cap over the humeral head; the upper arm hangs from it.
        cv.body_ellipse(R(sh[0] + 0.022), C(sh[1] + s * 0.004), P(0.048), P(r_sh + 0.007),
                        P(2 * r_sh) * PIXEL_MM, gain=gn["arm"], flat=ARM_FLAT)  # fmt: skip
        cv.body_capsule(R(sh[0] + 0.03), C(sh[1]), R(el[0]), C(el[1]), P(r_sh), P(r_el), 1.0,
                        gn["arm"], ARM_FLAT)  # fmt: skip
        cv.body_capsule(R(el[0]), C(el[1]), R(wr[0]), C(wr[1]), P(r_el), P(r_wr), 1.0,
                        gn["arm"], ARM_FLAT)  # fmt: skip
        # Hand: palm narrowing to the fingertips, about 3 cm thick (an even-width end reads
        # as a blunt stump).
        cv.body_capsule(R(wr[0] + 0.012), C(wr[1]), R(hd[0] + 0.022), C(hd[1]), P(r_hd),
                        P(0.55 * r_hd), 0.03 / (2 * r_hd), gn["arm"])  # fmt: skip
    # Upper chest: tall enough that its sides round into the armpits, below the trapezius line.
    cv.body_ellipse(R(sz + 0.06), C(0), P(0.07), P(wc * 1.05),
                    P(wc * 2 * body.depth_ratio) * PIXEL_MM, gain=gn["trunk"])  # fmt: skip
    for (z0, x0, z1, x1, r0, r1), gain, depth in ((chest, gn["trunk"], body.depth_ratio),
                                                  (abdomen, gn["abdomen"],
                                                   body.depth_ratio * 0.95)):  # fmt: skip
        cv.body_capsule(R(z0), C(x0), R(z1), C(x1), P(r0), P(r1), depth, gain)
    r0, r1 = int(R(PARASPINAL_Z[0])), int(R(PARASPINAL_Z[1]))
    c0, c1 = int(C(-PARASPINAL_HALF)), int(C(PARASPINAL_HALF)) + 1
    band = cv.gain[r0:r1, c0:c1]  # (a view: written in place)
    band[band == np.float32(gn["abdomen"])] = GAIN["abdomen"] * body.tissue[0]
    if body.sex == "M":  # penis and scrotum between the thighs (blood pool: clearly seen)
        cv.body_ellipse(R(0.51), C(0), P(0.032), P(0.017), P(0.04) * PIXEL_MM,
                        gain=gn["abdomen"])  # fmt: skip
    for s, (z0, x0, z1, x1, r0, r1) in zip((-1, 1), thighs, strict=True):
        _, knee, ankle, toe = leg_points(body, s)
        cv.body_capsule(R(z0), C(x0), R(z1), C(x1), P(r0), P(r1), 1.0, gn["thigh"], LIMB_FLAT)
        cs = body.calf_scale
        cv.body_capsule(R(knee[0]), C(knee[1]), R(ankle[0]), C(ankle[1]), P(0.036 * gi**0.5 * cs),
                        P(0.02), 1.0, gn["leg"], LIMB_FLAT)  # fmt: skip
        calf = (0.76 * knee[1] + 0.24 * ankle[1]) + s * 0.004  # calf muscle belly
        cv.body_ellipse(R(0.82), C(calf), P(0.08), P(0.036 * gi**0.5 * cs),
                        P(0.07 * gi**0.5 * cs) * PIXEL_MM,
                        gain=gn["leg"], flat=LIMB_FLAT)  # fmt: skip
        cv.body_capsule(R(ankle[0]), C(ankle[1]), R(toe[0]), C(toe[1]), P(0.029), P(0.023), 1.0,
                        gn["leg"] * body.foot_gain, LIMB_FLAT)  # fmt: skip
        if body.breast > 0:
            b = body.breast * gi
            cv.body_ellipse(R(0.285), C(s * 0.05), P(0.035 * b), P(0.045 * b),
                            P(0.05 * b) * PIXEL_MM, breast=True)  # fmt: skip


def kidney_centres() -> list[tuple[float, float]]:
    """Right and left kidney centres as (z, x); the left one sits a little lower."""
    return [(0.365 + 0.006 * (s > 0), s * 0.048) for s in (-1, 1)]


def draw_organs(cv: Canvas, g: Geometry, fx: Effects, bladder: float) -> None:
    """Kidneys (posterior, age-related retention) and bladder (anterior, variable filling)."""
    R, C, P = g.row, g.col, g.px
    for s, (z, x) in zip((-1, 1), kidney_centres(), strict=True):
        cv.ellipse(R(z), C(x), P(0.03), P(0.017), 0.16 * fx.renal_retention, 0.72,
                   angle=-s * 12.0)  # fmt: skip
    r = P(0.02) * bladder ** (1 / 3)
    cv.ellipse(R(0.485) - 0.3 * r, C(0), r * 0.85, r * 1.1, BLADDER_UPTAKE * bladder ** (1 / 3),
               0.3)  # fmt: skip


# Candidate degenerative sites as (z, x, f, sigma-fraction); order is the site index.
def degenerative_sites(body: Body) -> list[tuple[float, float, float, float]]:
    sites = []
    for s in (-1, 1):
        _, knee, ankle, toe = leg_points(body, s)
        kx, ax = knee[1], ankle[1]
        sh, el, wr, hd = arm_points(body, s)
        sites += [
            (0.712, kx - 0.01, 0.5, 0.006),  # knee, medial/lateral compartments
            (0.712, kx + 0.01, 0.5, 0.006),
            (0.478, s * 0.057, 0.5, 0.007),  # hip (superolateral acetabulum)
            (body.shoulder_z + 0.004, s * (body.shoulder - 0.012), 0.4, 0.006),  # AC joint
            (sh[0], sh[1], 0.5, 0.007),  # glenohumeral
            (wr[0] + 0.012, wr[1] - s * 0.01, 0.5, 0.004),  # first carpometacarpal
            (hd[0] + 0.01, wr[1], 0.5, 0.004),  # finger joints
            ((ankle[0] + 2 * toe[0]) / 3, (ax + 2 * toe[1]) / 3 - s * 0.004, 0.5, 0.005),  # MTP
            ((2 * ankle[0] + toe[0]) / 3, (2 * ax + toe[1]) / 3 + s * 0.004, 0.5, 0.005),
            (0.955, ax, 0.5, 0.005),  # ankle
        ]
    for z in (0.30, 0.35, 0.39, 0.42):  # vertebral body osteophytes (mid depth)
        sites.append((z, 0.02 * (1 if z > 0.36 else -1), 0.65, 0.006))
    return sites


def facet_sites() -> list[tuple[float, float]]:
    """Lumbar facet joints L2/3..L5/S1 on both sides as (z, x)."""
    return [(z, s * 0.017) for z in (0.365, 0.387, 0.409, 0.431) for s in (-1, 1)]
