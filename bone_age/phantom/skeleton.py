"""The skeleton, drawn into a depth-layered Canvas with regional uptake set by the age effects.

Regions and the effect that scales them (all through the latent bone age, see ``effects``):
calvarium, face and mandible - ``skull_uptake``; lumbar spine, sacrum and pelvis -
``spine_pelvis_uptake``; long-bone shafts - ``shaft_uptake``; sternal joints -
``sternal_variant``; everything - ``global_uptake``. Depths: face, sternum, patellae, clavicles
and pubis lie in front (f ~0.1), vertebral bodies behind the middle, spinous processes,
scapulae and sacrum at the back (f ~0.8-0.9).
"""

from __future__ import annotations

import numpy as np

from .body_plan import Z_L5, Z_T1, Z_T12, Body, Geometry, arm_points, leg_points
from .effects import Effects
from .render import Canvas


def _chain(cv: Canvas, g: Geometry, pts, r: float, amp: float, f: float) -> None:
    """Capsules through (z, x) points (a curved bone)."""
    for (z0, x0), (z1, x1) in zip(pts[:-1], pts[1:], strict=True):
        cv.capsule(g.row(z0), g.col(x0), g.row(z1), g.col(x1), g.px(r), g.px(r), amp, f)


def _skull(cv: Canvas, g: Geometry, skull: float, kyphosis: float, breadth: float) -> None:
    R, C, P = g.row, g.col, g.px
    kf = 1.0 - 0.004 * max(kyphosis - 40.0, 0.0)  # flexed head looks shorter
    cv.shell(R(0.062), C(0), P(0.060) * kf, P(0.046) * breadth, 0.8 * skull, 0.5, inner=0.76)
    cv.ellipse(R(0.098), C(0), P(0.012), P(0.04), SKULL_BASE * skull, 0.55)  # skull base, petrous
    cv.ellipse(R(0.09), C(0), P(0.022), P(0.024), 0.15 * skull, 0.1)  # maxilla, nasal bones
    cv.ellipse(R(0.112), C(0), P(0.008), P(0.021), 0.15 * skull, 0.1)  # alveolar ridge, teeth
    for s in (-1, 1):
        cv.shell(R(0.07), C(s * 0.018), P(0.012), P(0.012), 0.2 * skull, 0.1, inner=0.5)  # orbit
        cv.ellipse(R(0.085), C(s * 0.037), P(0.01), P(0.008), 0.15 * skull, 0.3)  # zygoma
        # Mandible: ramus from the temporomandibular joint, body to the chin.
        _chain(cv, g, [(0.085, s * 0.041), (0.112, s * 0.038), (0.128, s * 0.02),
                       (0.134, 0.0)], 0.007, 0.11 * skull, 0.1)  # fmt: skip


# v3: the vertebral bodies from T7 down take up less than v2.3 drew (x SPINE_BODY, beside the
# age effect on the lumbar spine): real views show the lower spine less hot among the body's
# pixels, in both views (its rank is the view rule's second cue; docs/phantom.md).
# v3 tail fix: SPINE_BODY 0.3 (was 0.1) with these bodies drawn in the deepest layer seen from
# the front (SPINE_CUE_DEPTH; the lumbar column's share too), so the spine cue separates the
# views more in the phantom's posterior views and less in its anterior ones; the T7-L2 arches
# at 0.6 x v2.3's (MID_ARCH, was 0.25) and the skull base at 0.4 x the skull's (SKULL_BASE, was
# 0.2; hotter still lifts the phantom's brightest pixels past the real NM1's): v3 put 27% of
# its posterior views on the anterior side of the view rule (real: few).
SPINE_BODY = 0.3
SPINE_CUE_DEPTH = 0.9
LUMBAR_ARCH = 2.0
MID_ARCH = 0.6
SKULL_BASE = 0.4
# v3: the sternal body (0.17 in v2.3; v3 0.22, tail fix 0.45): real anterior views rank the
# midline of the lower chest higher than the phantom with the deeper spine.
STERNUM = 0.45


def _spine(cv: Canvas, g: Geometry, fx: Effects) -> None:
    R, C, P = g.row, g.col, g.px
    gu, axial = fx.global_uptake, fx.global_uptake * fx.spine_pelvis_uptake
    levels = [(0.118 + i * (Z_T1 - 0.118) / 7, 0.011, 0.6) for i in range(7)]
    levels += [(Z_T1 + i * (Z_T12 - Z_T1) / 11, 0.014 + 0.0005 * i, 0.58) for i in range(12)]
    levels += [(Z_T12 + (i + 1) * (Z_L5 - Z_T12) / 5, 0.021, 0.8) for i in range(5)]
    upper_f = min(0.8, 0.66 + 0.002 * max(fx.kyphosis - 40, 0))  # kyphosis: spine backwards
    for i, (z, w, a) in enumerate(levels):
        # Bodies nearly touch (a continuous column); the disc spaces stay a little fainter.
        ry = (R(z + 0.005) - R(z - 0.005)) * 1.0 + 1.2
        f = upper_f if 7 <= i < 14 else 0.68
        amp = a * (axial if i >= 14 else gu * (0.5 + 0.5 * fx.spine_pelvis_uptake))
        if i < 14:  # (lumbar bodies: one column, below)
            cue = i >= 7
            cv.ellipse(R(z), C(0), ry, P(w), amp * (SPINE_BODY if cue else 1.0),
                       SPINE_CUE_DEPTH if cue else f)  # fmt: skip
        # v3: the arches (spinous, facets, transverse processes) of T7-L2 at MID_ARCH x
        # v2.3's, those of L3-L5 at LUMBAR_ARCH x: real posterior views show the lower
        # thoracic spine less hot, and hold more of their counts at the lower lumbar level.
        arch = amp * (LUMBAR_ARCH if i >= 16 else MID_ARCH if i >= 7 else 1.0)
        cv.ellipse(R(z) + ry * 0.3, C(0), ry * 0.6, P(0.0035), 0.3 * arch, 0.92)  # spinous
        for s in (-1, 1):  # pedicles / facet joints, transverse processes
            cv.ellipse(R(z), C(s * w * 0.75), ry * 0.8, P(0.005), 0.25 * arch, 0.85)
            cv.ellipse(R(z), C(s * (w + 0.01)), ry * 0.3, P(0.006), 0.2 * arch, 0.8)
    # Lumbar bodies are cylinders stacked on flat end plates: one column with fainter disc
    # spaces (separate ellipses read as a chain of beads, above all in the posterior view).
    rows, w = [R(z) for z, _, _ in levels[14:]], P(0.021)
    half = (rows[1] - rows[0]) / 2
    cv.capsule(rows[0] - half + w, C(0), rows[-1] + half - w, C(0), w, w,
               0.7 * axial * SPINE_BODY, SPINE_CUE_DEPTH)
    # L3-L5 at v2.3's uptake (below the cue's rows): the rest of the column's.
    cv.capsule(rows[2] - half + w, C(0), rows[-1] + half - w, C(0), w, w,
               0.7 * axial * (1 - SPINE_BODY), 0.68)
    for r0, r1 in zip(rows[:-1], rows[1:], strict=True):
        cv.ellipse((r0 + r1) / 2, C(0), P(0.003), w, -0.22 * axial, 0.68)  # disc
    cv.ellipse(R(0.462), C(0), P(0.036), P(0.03), 0.9 * axial, 0.82)  # sacrum (v3: 0.7)
    cv.ellipse(R(0.49), C(0), P(0.01), P(0.008), 0.5 * axial, 0.85)  # coccyx
    for s in (-1, 1):  # sacroiliac joints
        cv.capsule(R(0.44), C(s * 0.03), R(0.475), C(s * 0.022), P(0.006), P(0.005),
                   1.0 * axial, 0.8)  # (v3: 0.75)  # fmt: skip


def _thorax(cv: Canvas, body: Body, g: Geometry, fx: Effects) -> None:
    R, C, P, gu = g.row, g.col, g.px, fx.global_uptake
    for i in range(12):  # ribs: posterior half deep, anterior half ends lower, in front
        z0 = R(Z_T1 + i * (Z_T12 - Z_T1) / 11)
        # Lower ribs slope more steeply, and their bone ends further out (the costal
        # cartilage that joins them to the sternum takes up no tracer): no arch closes the cage.
        zdrop = (R(Z_T12) - R(Z_T1)) * (0.3 + 0.3 * i / 11)
        width = body.thorax * np.sin(np.pi * (0.25 + 0.75 * min(i, 8) / 8) / 2) * 1.02
        if i >= 9:
            width *= 1.0 - 0.08 * (i - 8)
        th = np.radians(np.linspace(-80.0, 60.0 - 10.0 * max(i - 5, 0), 7))
        for s in (-1, 1):
            # The posterior arc drops most (the strokes a scan shows run down and out).
            pts = [(z0 + zdrop * ((t + np.radians(80)) / np.radians(140)) ** 0.8,
                    C(s * width * np.cos(t)), (1 - np.sin(t)) / 2) for t in th]  # fmt: skip
            for (y0, x0, f0), (y1, x1, f1) in zip(pts[:-1], pts[1:], strict=True):
                # Anterior arcs are thinner, less bone: fainter. The flat band is seen edge-on
                # at the side of the chest: narrower there, which reads fainter once blurred.
                f = (f0 + f1) / 2
                side = 1.0 - abs(f - 0.5) * 2  # 1 at the lateral turn, 0 front and back
                amp = 0.21 * gu * (0.55 + 0.45 * min(2 * f, 1.0)) * (1.0 - 0.35 * side)
                cv.capsule(y0, x0, y1, x1, P(0.005), P(0.005), amp, f)
    sz, sv = body.shoulder_z, fx.sternal_variant
    cv.ellipse(R(0.215), C(0), P(0.017), P(0.018), 0.35 * gu, 0.08)  # manubrium
    cv.capsule(R(0.235), C(0), R(0.31), C(0), P(0.009), P(0.006), STERNUM * gu, 0.08)
    cv.gauss(R(0.233), C(0), P(0.006), 0.8 * gu * sv, 0.1)
    for s in (-1, 1):
        cv.gauss(R(0.199), C(s * 0.016), P(0.006), 0.45 * gu * sv, 0.1)  # sternoclavicular
        # Clavicle: S-curve from the sternum up and out to the acromion.
        xs = body.shoulder - 0.01
        _chain(cv, g, [(0.198, s * 0.02), (0.19, s * xs * 0.45), (sz + 0.006, s * xs * 0.8),
                       (sz, s * xs)], 0.0075, 0.14 * gu, 0.2)  # fmt: skip
        # Scapula (behind): triangular blade, spine, glenoid and acromion, coracoid.
        gl = (sz + 0.014, s * (body.shoulder - 0.022))
        tip = (sz + 0.125, s * (body.shoulder - 0.06))
        med = (sz + 0.02, s * (body.shoulder - 0.085))
        cv.ellipse(R(sz + 0.06), C(s * (body.shoulder - 0.055)), P(0.05), P(0.025), 0.15 * gu,
                   0.88, angle=-s * 10.0)  # fmt: skip
        _chain(cv, g, [gl, tip, med, gl], 0.004, 0.12 * gu, 0.85)
        _chain(cv, g, [med, (sz + 0.004, s * (body.shoulder - 0.008))], 0.004, 0.25 * gu, 0.92)
        cv.ellipse(R(gl[0]), C(gl[1]), P(0.011), P(0.006), 0.4 * gu, 0.6)
        acromion = C(s * (body.shoulder - 0.006))
        cv.ellipse(R(sz), acromion, P(0.008), P(0.012), 0.45 * gu, 0.5)


def _pelvis(cv: Canvas, body: Body, g: Geometry, axial: float) -> None:
    R, C, P, px = g.row, g.col, g.px, body.pelvis
    for s in (-1, 1):
        # Iliac wing: thin plate with a hot crest from the sacroiliac joint to the ASIS.
        cv.ellipse(R(0.437), C(s * (px - 0.035)), P(0.037), P(0.037), 0.13 * axial, 0.55)
        _chain(cv, g, [(0.432, s * 0.035), (0.409, s * (px - 0.035)), (0.412, s * (px - 0.01)),
                       (0.44, s * px)], 0.0055, 0.14 * axial, 0.55)  # fmt: skip
        _chain(cv, g, [(0.44, s * px), (0.465, s * (px - 0.02)), (0.474, s * 0.052)], 0.006,
               0.18 * axial, 0.45)  # fmt: skip
        hip = (0.478, s * 0.05)
        cv.shell(R(hip[0]), C(hip[1]), P(0.018), P(0.018), 0.35 * axial, 0.5, inner=0.7)
        # Obturator ring: superior pubic ramus, ischium, inferior ramus.
        cv.shell(R(0.505), C(s * 0.026), P(0.017), P(0.014), 0.35 * axial, 0.4, inner=0.65)
        _chain(cv, g, [hip, (0.49, s * 0.012)], 0.006, 0.3 * axial, 0.25)
        cv.ellipse(R(0.522), C(s * 0.034), P(0.007), P(0.009), 0.5 * axial, 0.75)  # tuberosity
    cv.ellipse(R(0.497), C(0), P(0.008), P(0.006), 0.6 * axial, 0.1)  # pubic symphysis


def _leg(cv: Canvas, body: Body, g: Geometry, s: int, gu: float, shaft: float) -> None:
    R, C, P = g.row, g.col, g.px
    fg = gu * body.foot_gain
    (hz, hx), (kz, kx), (az, ax), (tz, tx) = leg_points(body, s)
    cv.ellipse(R(hz), C(hx), P(0.014), P(0.014), 0.35 * gu, 0.5)  # femoral head
    cv.capsule(R(hz), C(hx), R(0.49), C(s * 0.07), P(0.008), P(0.009), 0.4 * gu, 0.5)
    cv.ellipse(R(0.487), C(s * 0.079), P(0.012), P(0.008), 0.45 * gu, 0.55)  # great trochanter
    cv.capsule(R(0.495), C(s * 0.068), R(kz - 0.015), C(kx), P(0.0095), P(0.0095), 0.23 * shaft,
               0.5)  # fmt: skip
    for dx in (-0.013, 0.013):  # femoral condyles, tibial plateau
        cv.ellipse(R(kz - 0.01), C(kx + s * dx), P(0.015), P(0.014), 0.36 * gu, 0.5)
        cv.ellipse(R(kz + 0.01), C(kx + s * dx), P(0.011), P(0.014), 0.32 * gu, 0.5)
    cv.ellipse(R(kz - 0.012), C(kx), P(0.014), P(0.012), 0.28 * gu, 0.05)  # patella, in front
    cv.capsule(R(kz + 0.02), C(kx), R(az - 0.01), C(ax), P(0.0115), P(0.0085), 0.2 * shaft, 0.4)
    cv.capsule(R(kz + 0.025), C(kx + s * 0.016), R(az - 0.005), C(ax + s * 0.013), P(0.003),
               P(0.003), 0.2 * shaft, 0.6)  # fibula  # fmt: skip
    for dx in (-0.012, 0.012):  # malleoli
        cv.ellipse(R(az), C(ax + s * dx), P(0.007), P(0.006), 0.22 * gu, 0.5)
    # Foot (plantar-flexed, turned out): talus and calcaneus, metatarsals, toes.
    cv.ellipse(R(az + 0.008), C(ax), P(0.012), P(0.013), 0.22 * fg, 0.6)
    mid = (az + 0.45 * (tz - az), ax + 0.45 * (tx - ax))
    cv.ellipse(R(mid[0]), C(mid[1]), P(0.014), P(0.015), 0.24 * fg, 0.4)  # tarsus
    for k in range(3):
        d = (k - 1) * 0.006
        cv.capsule(R(mid[0]), C(mid[1] + d), R(tz), C(tx + 1.4 * d), P(0.0032), P(0.003),
                   0.28 * fg, 0.3)  # fmt: skip


def _arm(cv: Canvas, body: Body, g: Geometry, s: int, gu: float, shaft: float) -> None:
    R, C, P = g.row, g.col, g.px
    sh, el, wr, hd = arm_points(body, s)
    cv.ellipse(R(sh[0]), C(sh[1]), P(0.018), P(0.017), 0.7 * gu, 0.5)  # humeral head
    cv.capsule(R(sh[0] + 0.01), C(sh[1]), R(el[0] - 0.01), C(el[1]), P(0.007), P(0.0065),
               0.15 * shaft, 0.5)  # fmt: skip
    cv.ellipse(R(el[0]), C(el[1]), P(0.01), P(0.015), 0.22 * gu, 0.5)  # elbow (epicondyles)
    for dx in (-0.006, 0.006):  # radius and ulna
        cv.capsule(R(el[0] + 0.008), C(el[1] + dx), R(wr[0]), C(wr[1] + dx * 0.8), P(0.0038),
                   P(0.0043), 0.15 * shaft, 0.5)  # fmt: skip
    cv.ellipse(R(wr[0] + 0.008), C(wr[1]), P(0.009), P(0.012), 0.4 * gu, 0.5)  # carpus
    for k in range(4):  # metacarpals and fingers, pointing down along the thigh
        dx = (k - 1.5) * 0.0055
        cv.capsule(R(wr[0] + 0.016), C(wr[1] + dx), R(hd[0] + 0.03), C(wr[1] + dx * 1.3),
                   P(0.0024), P(0.0018), 0.25 * gu, 0.5)  # fmt: skip
    cv.capsule(R(wr[0] + 0.014), C(wr[1] - s * 0.01), R(wr[0] + 0.04), C(wr[1] - s * 0.02),
               P(0.0026), P(0.002), 0.25 * gu, 0.4)  # thumb  # fmt: skip


def draw_skeleton(cv: Canvas, body: Body, g: Geometry, fx: Effects) -> None:
    """Bones with regional uptake modulated by the age effects.

    Args:
        cv: canvas to draw into.
        body: the subject's body and pose.
        g: its geometry (height loss and kyphosis applied).
        fx: its realised age effects.
    """
    gu = fx.global_uptake
    _skull(cv, g, gu * fx.skull_uptake * body.skull_gain, fx.kyphosis, body.head_scale)
    _spine(cv, g, fx)
    _thorax(cv, body, g, fx)
    _pelvis(cv, body, g, gu * fx.spine_pelvis_uptake)
    for s in (-1, 1):
        _leg(cv, body, g, s, gu, gu * fx.shaft_uptake)
        _arm(cv, body, g, s, gu, gu * fx.shaft_uptake)
