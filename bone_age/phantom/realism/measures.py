"""Label-free image measures of a whole-body bone scan frame, for comparing phantom and real scans.

Every measure is computed the same way on a real frame and on a phantom frame (counts, image rows
head to feet). Measures that would scale with the injected activity or the scan time are
normalised by the counts inside the body; ``total_counts`` itself is kept as the count
statistic. Heights are fractions of the body's own height (vertex to soles), so a tall and a
short person are compared at the same anatomical level.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from bone_age.data.anatomy import Body, body_outline

# Height bands as fractions of body height, from standard anthropometric proportions (chin
# ~0.13 H, acromion ~0.18 H, iliac crest ~0.41 H, perineum ~0.52 H, knee ~0.72 H, ankle ~0.96 H).
BANDS: tuple[tuple[str, float, float], ...] = (
    ("head", 0.0, 0.13),
    ("neck", 0.13, 0.18),
    ("thorax", 0.18, 0.35),
    ("abdomen", 0.35, 0.45),
    ("pelvis", 0.45, 0.53),
    ("thighs", 0.53, 0.72),
    ("legs", 0.72, 0.95),
    ("feet", 0.95, 1.0),
)
WIDTH_LEVELS = (0.07, 0.16, 0.25, 0.38, 0.49, 0.62, 0.82, 0.97)  # mid-height of each band
QUANTILES = (50, 90, 99)
# The shape of the body and where its counts lie along the height (issue 32's 17 shape measures):
# unlike the count statistics, contrast, spectrum and edge, an increasing display processing
# of an 8-bit render changes these little, so real renders can be compared on them.
SHAPE_MEASURES: tuple[str, ...] = (*(f"width_{b[0]}_over_height" for b in BANDS),
                                   *(f"counts_{b[0]}" for b in BANDS), "left_right_symmetry")


def _band_rows(body: Body, lo: float, hi: float) -> slice:
    return slice(body.row(lo), max(body.row(hi), body.row(lo) + 1))


def radial_psd(img: np.ndarray, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the body's bounding box (mean-normalised, Hann
    window); returns (frequency in cycles/px, power).

    Args:
        img: counts of one frame.
        body: its outline (:func:`body_outline`).
    """
    cols = np.flatnonzero(body.mask.any(axis=0))
    box = img[body.top : body.bottom + 1, cols[0] : cols[-1] + 1].astype(np.float64)
    box = box / max(box.mean(), 1e-9) - 1.0
    box *= np.outer(np.hanning(box.shape[0]), np.hanning(box.shape[1]))
    power = np.abs(np.fft.fft2(box)) ** 2 / box.size
    fy = np.fft.fftfreq(box.shape[0])[:, None]
    fx = np.fft.fftfreq(box.shape[1])[None, :]
    f = np.sqrt(fy**2 + fx**2).ravel()
    edges = np.linspace(0.0, 0.5, 51)
    idx = np.digitize(f, edges) - 1
    ok = (idx >= 0) & (idx < 50)
    sums = np.bincount(idx[ok], power.ravel()[ok], minlength=50)
    n = np.bincount(idx[ok], minlength=50)
    return (edges[:-1] + edges[1:]) / 2, sums / np.maximum(n, 1)


def edge_spread(img: np.ndarray, body: Body, half: int = 10) -> float:
    """10-90% width (px) of the mean edge profile across the left and right body outline
    (rows where the body runs out of the camera's field are left out).

    Each row's profile (rows smoothed vertically only, so the horizontal edge is untouched) is
    aligned at the outline and scaled by the counts just inside; the aligned profiles are
    averaged, which removes the Poisson noise, and the rise is read off the average.

    Args:
        img: counts of one frame.
        body: its outline (:func:`body_outline`).
        half: half-length (px) of each profile across the outline.
    """
    sm = ndi.gaussian_filter1d(img.astype(np.float64), 3.0, axis=0)
    profiles = []
    # Where the body reaches the edge of the camera's field, the outline is the field's cut.
    fov = np.flatnonzero(img.any(axis=0))
    lo, hi = max(fov[0] + 8, half), min(fov[-1] - 8, img.shape[1] - half)
    for r in range(body.row(0.02), body.row(0.98)):
        for edge, step in ((body.left[r], 1), (body.right[r], -1)):
            if edge < 0 or not lo <= edge < hi:
                continue
            p = sm[r, edge - step * half : edge + step * half : step]
            level = p[half + 3 : half + 8].mean()
            if level > 0:
                profiles.append(p / level)
    if not profiles:
        return float("nan")
    esf = np.mean(profiles, axis=0)
    esf = (esf - esf[:3].mean()) / max(esf[-5:].mean() - esf[:3].mean(), 1e-9)
    x = np.arange(esf.size, dtype=float)
    rise = np.maximum.accumulate(esf)  # monotone envelope for a unique crossing
    return float(np.interp(0.9, rise, x) - np.interp(0.1, rise, x))


def measure(img: np.ndarray) -> dict[str, float]:
    """All realism measures of one frame (see the module docstring), name -> value.

    Args:
        img: one whole-body frame of counts, rows head to feet.
    """
    img = np.asarray(img, dtype=np.float64)
    body = body_outline(img)
    inside = img[body.mask]
    total = float(img.sum())
    out: dict[str, float] = {"total_counts": total, "height_px": float(body.height)}
    mean_in = max(float(inside.mean()), 1e-9)
    qs = np.percentile(inside, QUANTILES)
    for q, v in zip(QUANTILES, qs, strict=True):
        out[f"body_q{q}_over_mean"] = float(v / mean_in)
    out["bone_to_soft_q99_q50"] = float(qs[-1] / max(qs[0], 1.0))
    f, p = radial_psd(img, body)
    mid = (f >= 0.03) & (f <= 0.25)
    out["psd_slope"] = float(np.polyfit(np.log10(f[mid]), np.log10(p[mid] + 1e-30), 1)[0])
    out["psd_high_over_low"] = float(p[f >= 0.3].mean() / max(p[(f >= 0.03) & (f < 0.1)].mean(),
                                                              1e-30))  # fmt: skip
    out["edge_spread_px"] = edge_spread(img, body)
    for name, level in zip((b[0] for b in BANDS), WIDTH_LEVELS, strict=True):
        r = body.row(level)
        rows = slice(max(r - 2, 0), r + 3)
        widths = body.mask[rows].sum(axis=1)
        out[f"width_{name}_over_height"] = float(widths.mean() / body.height)
    band_total = float(img[body.top : body.bottom + 1].sum()) or 1.0
    for name, lo, hi in BANDS:
        out[f"counts_{name}"] = float(img[_band_rows(body, lo, hi)].sum() / band_total)
    out["left_right_symmetry"] = symmetry(img, body)
    return out


def symmetry(img: np.ndarray, body: Body) -> float:
    """1 - |L - R| / (L + R), halves split at each row's outline midpoint (1 = symmetric).

    Args:
        img: counts of one frame.
        body: its outline (:func:`body_outline`).
    """
    rows = np.flatnonzero(body.left >= 0)
    mid = (body.left[rows] + body.right[rows]) / 2
    cols = np.arange(img.shape[1])[None, :]
    part = img[rows] * body.mask[rows]
    left = float(part[cols < mid[:, None]].sum())
    right = float(part[cols > mid[:, None]].sum())
    return 1.0 - abs(left - right) / max(left + right, 1e-9)
