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

import numpy as np
from scipy.ndimage import gaussian_filter

NROWS, NCOLS = 1024, 256
PIXEL_MM = 2.26
MU_PER_MM = 0.011  # ~0.11/cm: broad-beam attenuation of 140 keV photons in soft tissue
DEPTHS = np.array([0.08, 0.3, 0.5, 0.7, 0.9], dtype=np.float32)
# Collimator blur (sigma, px) for structures near / far from a detector: LEHR FWHM grows from
# ~6 mm at 5 cm to ~11 mm at 18 cm.
SIGMA_NEAR, SIGMA_FAR = 1.15, 2.0


def _box(cy: float, cx: float, hy: float, hx: float) -> tuple[int, int, int, int] | None:
    y0, y1 = max(int(cy - hy - 1), 0), min(int(cy + hy + 2), NROWS)
    x0, x1 = max(int(cx - hx - 1), 0), min(int(cx + hx + 2), NCOLS)
    if y0 >= y1 or x0 >= x1:
        return None
    return y0, y1, x0, x1


def _grid(b: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    y0, y1, x0, x1 = b
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    return yy, xx


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
    t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0.0, 1.0)
    d2 = (yy - y0 - t * dy) ** 2 + (xx - x0 - t * dx) ** 2
    rr = r0 + t * (r1 - r0)
    return b, np.sqrt(np.clip(1.0 - d2 / (rr * rr), 0.0, None))


def ellipse_profile(
    cy: float, cx: float, ry: float, rx: float, angle: float = 0.0
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    """Projected chord profile (0..1) of an ellipsoid; angle in degrees (counter-clockwise)."""
    h = max(ry, rx)
    b = _box(cy, cx, h, h)
    if b is None:
        return None
    yy, xx = _grid(b)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    dy, dx = yy - cy, xx - cx
    u = (dx * c - dy * s) / rx
    w = (dx * s + dy * c) / ry
    return b, np.sqrt(np.clip(1.0 - u * u - w * w, 0.0, None))


def gauss_profile(
    cy: float, cx: float, sigma: float
) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
    b = _box(cy, cx, 3 * sigma, 3 * sigma)
    if b is None:
        return None
    yy, xx = _grid(b)
    return b, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma * sigma))


class Canvas:
    """Depth-layered activity maps plus a body-thickness map (mm) and breast thickness (mm)."""

    def __init__(self) -> None:
        self.layers = np.zeros((len(DEPTHS), NROWS, NCOLS), dtype=np.float32)
        self.thickness = np.zeros((NROWS, NCOLS), dtype=np.float32)
        self.breast = np.zeros((NROWS, NCOLS), dtype=np.float32)
        self.soft = np.zeros((NROWS, NCOLS), dtype=np.float32)  # extra soft-tissue activity

    def _add(self, prof, amp: float, f: float) -> None:
        if prof is None or amp == 0:
            return
        (y0, y1, x0, x1), p = prof
        k = int(np.abs(DEPTHS - f).argmin())
        self.layers[k, y0:y1, x0:x1] += amp * p

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

    def body_capsule(self, y0, x0, y1, x1, r0, r1, depth_ratio: float) -> None:
        """Soft-tissue segment: thickness (mm) = chord of an elliptic cylinder; union by max."""
        prof = capsule_profile(y0, x0, y1, x1, r0, r1)
        if prof is None:
            return
        (a, b, c, d), p = prof
        t = p * (2 * max(r0, r1) * depth_ratio * PIXEL_MM)
        np.maximum(self.thickness[a:b, c:d], t, out=self.thickness[a:b, c:d])

    def body_ellipse(self, cy, cx, ry, rx, depth_mm: float, breast: bool = False) -> None:
        prof = ellipse_profile(cy, cx, ry, rx)
        if prof is None:
            return
        (a, b, c, d), p = prof
        target = self.breast if breast else self.thickness
        np.maximum(target[a:b, c:d], p * depth_mm, out=target[a:b, c:d])


def camera(
    cv: Canvas,
    soft_conc: float,
    counts_ant: float,
    background: float,
    fov: tuple[int, int, int, int],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Attenuate, blur, scale to the drawn count level and add Poisson noise.

    Returns (anterior, posterior) uint16 frames as acquired (posterior mirrored) and the
    realised total counts of each.
    """
    T = cv.thickness
    a_ant = np.exp(-MU_PER_MM * T)  # transmission through the whole body
    # Soft tissue is spread through the depth: integral of exp(-mu z) dz, same for both heads.
    soft = (soft_conc / MU_PER_MM) * (1.0 - a_ant) + cv.soft * np.exp(-MU_PER_MM * T * 0.5)
    breast_att = np.exp(-MU_PER_MM * cv.breast)
    soft_ant = soft * breast_att + (soft_conc / MU_PER_MM) * (1.0 - breast_att)
    views = []
    for view in ("ant", "post"):
        near = np.zeros((NROWS, NCOLS), np.float32)
        far = soft_ant if view == "ant" else soft.copy()
        far = far.astype(np.float32, copy=True)
        for k, f in enumerate(DEPTHS):
            depth = f if view == "ant" else 1.0 - f
            att = np.exp(-MU_PER_MM * depth * T)
            if view == "ant":
                att *= breast_att
            target = near if depth <= 0.35 else far
            target += cv.layers[k] * att
        img = gaussian_filter(near, SIGMA_NEAR, truncate=3.0)
        img += gaussian_filter(far, SIGMA_FAR, truncate=3.0)
        views.append(img)
    ant, post = views
    post = post[:, ::-1]  # camera behind the patient: patient's left on image left
    scale = counts_ant / max(float(ant.sum()), 1e-6)
    r0, r1, c0, c1 = fov
    out, totals = [], []
    for img in (ant, post):
        lam = img * scale
        lam[r0:r1, c0:c1] += background
        mask = np.zeros(lam.shape, bool)
        mask[r0:r1, c0:c1] = True  # the camera only counts inside its scanned field
        counts = np.zeros(lam.shape, np.int64)
        counts[mask] = rng.poisson(np.clip(lam[mask], 0, None))
        frame = np.clip(counts, 0, 65535).astype(np.uint16)
        out.append(frame)
        totals.append(float(frame.sum(dtype=np.int64)))
    return out[0], out[1], totals[0], totals[1]
