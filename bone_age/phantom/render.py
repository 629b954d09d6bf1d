"""Rasterising primitives and the physics of a dual-head gamma camera.

Everything is drawn in the *anterior* image frame (image left = patient's right). Each primitive
carries a depth fraction f (0 = anterior skin, 1 = posterior skin) and lands in one of a few
depth layers. The anterior view attenuates a layer by exp(-mu * f * T) and the posterior view by
exp(-mu * (1 - f) * T), with T the local body thickness, so deep-posterior structures (facets,
kidneys, scapulae) are brighter and sharper in the posterior view and the sternum in the
anterior view. The posterior frame is then mirrored left-right, exactly like a camera behind
the patient sees it (patient's left on image left).
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

NROWS, NCOLS = 1024, 256
PIXEL_MM = 2.26
MU_PER_MM = 0.011  # ~0.11/cm: broad-beam attenuation of 140 keV photons in soft tissue
# Symmetric depth layers: the posterior depths (1 - f) are the same set, so one exp suffices.
DEPTHS = np.array([0.1, 0.3, 0.5, 0.7, 0.9], dtype=np.float32)
# Collimator blur grows with the distance from the detector: FWHM = 4.1 mm + 0.05 z, ~6.6 mm
# at 5 cm and ~13 mm at 18 cm (LEHR in a continuous whole-body sweep, which smears a little
# more than a static view). Layers are blurred in three groups (depth
# fraction from the detector <= 0.3, 0.5, >= 0.7) at the distance of their typical depth in a
# 22 cm trunk with the detector contoured 2 cm from the skin.
TRUNK_MM, GAP_MM = 220.0, 20.0
THIN_MM = 150.0  # body parts thinner than this (limbs) are blurred as near structures
GAIN_BOX = 41  # px (~9 cm): soft-tissue concentration changes smoothly between body parts
# Creases where body segments meet (union by max: shoulder, armpit, hip, crotch, a thigh's
# cap inside the pelvis) are filled with the thickness map smoothed by two passes of a box of
# this width (~ Gaussian, sigma ~6 px = 14 mm), inside the drawn outline only: the GE scan's
# outline is sharp (10-90% edge width 5 px, realism measure edge_spread_px), its creases are not.
THICK_BOX = 15


def collimator_sigma(z_mm: float) -> float:
    """Gaussian sigma (px) of the collimator response at a distance from its face.

    Args:
        z_mm: distance from the collimator face, mm.
    """
    return (4.1 + 0.05 * z_mm) / 2.355 / PIXEL_MM


SIGMAS = tuple(collimator_sigma(GAP_MM + d * TRUNK_MM) for d in (0.2, 0.5, 0.8))
SCATTER_SIGMA_MM = 40.0  # energy-window scatter of a site's camera: a broad haze (sites.py)


def _box(cy: float, cx: float, hy: float, hx: float) -> tuple[int, int, int, int] | None:
    y0, y1 = max(int(cy - hy - 1), 0), min(int(cy + hy + 2), NROWS)
    x0, x1 = max(int(cx - hx - 1), 0), min(int(cx + hx + 2), NCOLS)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def _weak(v: object) -> bool:
    """A Python number: it takes an array's dtype, so an in-place update equals the plain
    expression (a numpy float64 would widen a float32 result instead)."""
    return type(v) is float or type(v) is int


# Pixel coordinates, sliced by every primitive (a view is cheaper than a new arange).
_ROWS = np.arange(NROWS, dtype=np.float32)[:, None]
_COLS = np.arange(NCOLS, dtype=np.float32)[None, :]


def _grid(b: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = b
    return _ROWS[y0:y1], _COLS[:, x0:x1]


def capsule_profile(
    y0: float, x0: float, y1: float, x1: float, r0: float, r1: float
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Projected chord profile (0..1) of a tapered cylinder with rounded ends."""
    r = max(r0, r1)
    b = _box((y0 + y1) / 2, (x0 + x1) / 2, abs(y1 - y0) / 2 + r, abs(x1 - x0) / 2 + r)
    if b is None:
        return None
    yy, xx = _grid(b)
    dy, dx = y1 - y0, x1 - x0
    # The arithmetic (operation by operation, same dtypes) is exactly that of the formulas
    # t = clip(((y - y0) dy + (x - x0) dx) / |d|^2, 0, 1), d2 = (y - y0 - t dy)^2 + (x - ...)^2,
    # rr = r0 + t (r1 - r0), sqrt(max(1 - d2 / rr^2, 0)): in place, so fewer temporaries.
    ry, rx = yy - y0, xx - x0
    t = ry * dy + rx * dx
    t *= 1.0 / max(dy * dy + dx * dx, 1e-6)
    np.maximum(t, 0.0, out=t)
    np.minimum(t, 1.0, out=t)
    d2 = t * dy
    np.subtract(ry, d2, out=d2)
    np.square(d2, out=d2)
    e = t * dx
    np.subtract(rx, e, out=e)
    np.square(e, out=e)
    d2 += e
    if not (_weak(r0) and _weak(r1)):  # a numpy radius can widen the dtype: plain formula
        d2 = d2 / (r0 + t * (r1 - r0)) ** 2
    elif r1 == r0:  # r0 + t * 0 is r0 exactly (t >= 0): rr^2 is one number of t's dtype
        d2 /= t.dtype.type(r0) * t.dtype.type(r0)
    else:
        rr = t
        rr *= r1 - r0
        rr += r0
        np.square(rr, out=rr)
        d2 /= rr
    np.subtract(1.0, d2, out=d2)
    np.maximum(d2, 0.0, out=d2)
    return b, np.sqrt(d2, out=d2)


@functools.lru_cache(maxsize=64)
def _cos_sin(angle: float) -> tuple[np.float64, np.float64]:
    return np.cos(np.radians(angle)), np.sin(np.radians(angle))


def ellipse_profile(
    cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Projected chord profile (0..1) of an ellipsoid; angle in degrees (counter-clockwise)."""
    h = max(ry, rx)
    b = _box(cy, cx, h, h)
    if b is None:
        return None
    yy, xx = _grid(b)
    c, s = _cos_sin(angle)
    dy, dx = yy - cy, xx - cx
    # Same operations as sqrt(max(1 - u^2 - w^2, 0)) with u = (dx c - dy s) / rx,
    # w = (dx s + dy c) / ry (float64: c and s are numpy float64), fewer temporaries.
    u = dx * c - dy * s
    u /= rx
    w = dx * s + dy * c
    w /= ry
    np.square(u, out=u)
    np.square(w, out=w)
    np.subtract(1.0, u, out=u)
    u -= w
    np.maximum(u, 0.0, out=u)
    return b, np.sqrt(u, out=u)


def gauss_profile(
    cy: float, cx: float, sigma: float
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    b = _box(cy, cx, 3 * sigma, 3 * sigma)
    if b is None:
        return None
    yy, xx = _grid(b)
    # -(dy^2 + dx^2) / (2 sigma^2), operation by operation, then exp in place.
    a = (yy - cy) ** 2 + (xx - cx) ** 2
    np.negative(a, out=a)
    a = np.divide(a, 2 * sigma * sigma, out=a if _weak(sigma) else None)
    return b, np.exp(a, out=a)


@functools.lru_cache(maxsize=4096)
def _layer(f: float) -> int:
    """Index of the depth layer nearest to depth fraction f (few distinct f: cached)."""
    return int(np.abs(DEPTHS - f).argmin())


class Canvas:
    """Depth-layered activity maps plus a body-thickness map (mm) and breast thickness (mm)."""

    def __init__(self) -> None:
        self.layers = np.zeros((len(DEPTHS), NROWS, NCOLS), dtype=np.float32)
        self.thickness = np.zeros((NROWS, NCOLS), dtype=np.float32)
        self.breast = np.zeros((NROWS, NCOLS), dtype=np.float32)
        self.soft = np.zeros((NROWS, NCOLS), dtype=np.float32)  # extra soft-tissue activity
        self.gain = np.zeros((NROWS, NCOLS), dtype=np.float32)  # soft-tissue concentration

    def _add(self, prof, amp: float, f: float) -> None:
        if prof is None or amp == 0:
            return
        (y0, y1, x0, x1), p = prof
        p = np.multiply(p, amp, out=p if _weak(amp) else None)  # p: this call's own array
        self.layers[_layer(f), y0:y1, x0:x1] += p

    def capsule(self, y0, x0, y1, x1, r0, r1, amp: float, f: float) -> None:
        self._add(capsule_profile(y0, x0, y1, x1, r0, r1), amp, f)

    def ellipse(self, cy, cx, ry, rx, amp: float, f: float, angle: float = 0.0) -> None:
        self._add(ellipse_profile(cy, cx, ry, rx, angle), amp, f)

    def shell(self, cy, cx, ry, rx, amp: float, f: float, inner: float = 0.85) -> None:
        """Hollow ellipsoid (calvarium): outer chord minus inner chord."""
        self.ellipse(cy, cx, ry, rx, amp, f)
        self.ellipse(cy, cx, ry * inner, rx * inner, -amp * inner, f)

    def gauss(self, cy, cx, sigma, amp: float, f: float) -> None:
        self._add(gauss_profile(cy, cx, sigma), amp, f)

    def _body(self, prof, depth_mm: float, gain: float, flat: float) -> None:
        """Union by max of thickness; the segment that sets the thickness sets the gain.

        ``flat`` < 1 makes the cross-section flatter-sided than an ellipse (limbs: muscle and
        fat): thickness = chord ** flat.
        """
        (a, b, c, d), p = prof
        t = (p**flat if flat != 1.0 else p) * depth_mm
        thick, g = self.thickness[a:b, c:d], self.gain[a:b, c:d]
        g[t > thick] = gain
        np.maximum(thick, t, out=thick)

    def body_capsule(self, y0, x0, y1, x1, r0, r1, depth_ratio: float, gain: float = 1.0,
                     flat: float = 1.0) -> None:  # fmt: skip
        """Soft-tissue segment: thickness (mm) = chord of an elliptic cylinder; union by max."""
        prof = capsule_profile(y0, x0, y1, x1, r0, r1)
        if prof is not None:
            self._body(prof, 2 * max(r0, r1) * depth_ratio * PIXEL_MM, gain, flat)

    def body_ellipse(self, cy, cx, ry, rx, depth_mm: float, breast: bool = False,
                     gain: float = 1.0, flat: float = 1.0) -> None:  # fmt: skip
        prof = ellipse_profile(cy, cx, ry, rx)
        if prof is None:
            return
        if breast:
            (a, b, c, d), p = prof
            np.maximum(self.breast[a:b, c:d], p * depth_mm, out=self.breast[a:b, c:d])
        else:
            self._body(prof, depth_mm, gain, flat)


def fill_creases(drawn: np.ndarray) -> np.ndarray:
    """Body thickness with the creases between segments filled; the outline is kept.

    Args:
        drawn: thickness map (mm) as drawn, union by max of the segments.
    """
    T = uniform_filter(drawn, THICK_BOX, mode="nearest")
    uniform_filter(T, THICK_BOX, output=T, mode="nearest")
    np.maximum(T, drawn, out=T)
    T *= drawn > 0
    return T


def _extra_sigma(wide: float, narrow: float) -> float:
    """Width of the blur that takes a Gaussian of width ``narrow`` to one of width ``wide``."""
    return float(np.sqrt(max(wide * wide - narrow * narrow, 0.0)))


def poisson_counts(signal: np.ndarray, background: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts with mean ``signal`` + ``background`` per pixel (int64, signal's shape).

    A sum of independent Poisson variables is Poisson with the summed mean, so the two parts
    are drawn apart: the signal only where it is above zero (outside the body and its blur it is
    exactly zero), the uniform background as a Poisson number of events dropped on uniformly
    drawn pixels. Same distribution as drawing every pixel, about half the draws.

    Args:
        signal: expected counts from the patient per pixel (negative rounding noise reads as 0).
        background: expected uniform background counts per pixel.
        rng: the subject's noise stream.
    """
    flat = signal.ravel()
    hit = np.flatnonzero(flat > 0)
    counts = np.zeros(flat.size, np.int64)
    counts[hit] = rng.poisson(flat[hit])
    events = rng.integers(0, flat.size, rng.poisson(background * flat.size))
    counts += np.bincount(events, minlength=flat.size)
    return counts.reshape(signal.shape)


def camera(
    cv: Canvas,
    soft_conc: float,
    counts_ant: float,
    background: float,
    fov: tuple[int, int, int, int],
    rng: np.random.Generator,
    fwhm_scale: float = 1.0,
    scatter: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Attenuate, blur, scale to the drawn count level and add Poisson noise.

    Only the scanned field of view ``fov`` = (row0, row1, col0, col1) is processed (the camera
    records nothing outside it). ``fwhm_scale`` scales the collimator blur and ``scatter`` moves
    that fraction of the counts into a broad blur of width ``SCATTER_SIGMA_MM`` (a site's
    camera and energy window; the defaults are the reference camera, computed exactly as
    before sites existed). Returns (anterior, posterior) uint16 frames as acquired (posterior
    mirrored) and the realised total counts of each.
    """
    sigmas = SIGMAS if fwhm_scale == 1.0 else tuple(s * fwhm_scale for s in SIGMAS)
    r0, r1, c0, c1 = fov
    T = fill_creases(cv.thickness[r0:r1, c0:c1])
    # Transmission through depth 0.1*k*T for k = 1..10 by repeated products (one exp only).
    e1 = np.exp(np.float32(-0.1 * MU_PER_MM) * T)
    e2 = e1 * e1
    trans = {1: e1, 2: e2}
    for k in (3, 5, 7, 9):
        trans[k] = trans[k - 2] * e2
    trans[10] = trans[9] * e1
    has_breast = bool(cv.breast[r0:r1, c0:c1].any())  # men: no breast term at all (speed)
    breast_att = np.exp(np.float32(-MU_PER_MM) * cv.breast[r0:r1, c0:c1]) if has_breast else None
    # Soft tissue is spread through the depth: integral of exp(-mu z) dz, same for both heads;
    # breasts add their own activity and attenuate what lies behind them in the anterior view.
    # Concentration changes smoothly between body parts (no seams where segments meet): box
    # average over the body only, so the outline keeps its concentration.
    inside = (T > 0).astype(np.float32)
    gain = uniform_filter(cv.gain[r0:r1, c0:c1], GAIN_BOX)
    gain *= inside / np.maximum(uniform_filter(inside, GAIN_BOX), np.float32(1e-3))
    sc = np.float32(soft_conc / MU_PER_MM) * gain
    soft = sc * (1.0 - trans[10]) + cv.soft[r0:r1, c0:c1] * trans[5]
    soft_ant = soft * breast_att + sc * (1.0 - breast_att) if has_breast else soft
    # Soft tissue of thin parts (limbs, the outline) lies close to the detector.
    thin = T < THIN_MM
    tmp = np.empty_like(T)
    views = []
    for view in ("ant", "post"):
        tissue = soft_ant if view == "ant" else soft
        near = np.where(thin, tissue, np.float32(0.0))
        groups = [near, tissue - near, np.zeros_like(T)]
        for k, f in enumerate(DEPTHS):
            depth = f if view == "ant" else 1.0 - f
            np.multiply(cv.layers[k, r0:r1, c0:c1], trans[int(round(depth * 10))], out=tmp)
            if view == "ant" and has_breast:
                tmp *= breast_att
            groups[0 if depth <= 0.35 else (1 if depth < 0.65 else 2)] += tmp
        # Sum of the groups' blurs as a cascade (Gaussian widths add in quadrature): the far
        # group is blurred by the difference to the middle one, added, and so on: three
        # narrow blurs instead of three of growing width, the same response.
        img = groups[2]
        for g in (1, 0):
            img = gaussian_filter(img, _extra_sigma(sigmas[g + 1], sigmas[g]), truncate=3.0)
            img += groups[g]
        img = gaussian_filter(img, sigmas[0], truncate=3.0)
        if scatter > 0:
            wide = gaussian_filter(img, SCATTER_SIGMA_MM / PIXEL_MM, truncate=3.0)
            img = np.float32(1.0 - scatter) * img + np.float32(scatter) * wide
        views.append(img)
    ant, post = views
    scale = np.float32(counts_ant / max(float(ant.sum(dtype=np.float64)), 1e-6))
    out, totals = [], []
    for k, img in enumerate((ant, post)):
        frame = np.zeros((NROWS, NCOLS), np.uint16)
        frame[r0:r1, c0:c1] = np.minimum(poisson_counts(img * scale, background, rng), 65535)
        if k == 1:  # camera behind the patient: patient's left on image left
            frame = np.ascontiguousarray(frame[:, ::-1])
        out.append(frame)
        totals.append(float(frame.sum(dtype=np.int64)))
    return out[0], out[1], totals[0], totals[1]
