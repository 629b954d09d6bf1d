"""A whole-body frame's anatomy: its body outline, and which view (anterior / posterior) it shows.

Moved here from phantom/realism so that the indexer (data/) can use it for cameras that write
no view code; phantom/realism imports it from here (data/ may not import phantom/realism).

The view rests on two cues, both from where the camera sits relative to the skeleton:

- face: the facial bones, orbits and mandible lie in front; seen from the front they are among
  the hottest parts of the head, seen from behind they are attenuated by the whole skull.
  Cue: mean counts of the lower head (face and jaw) over the upper head (calvarium).
- spine: the lumbar vertebrae lie at the back of the abdomen; seen from behind they stand out
  from the soft tissue beside them, seen from the front the abdomen attenuates them.
  Cue: mean counts of a midline strip over the upper lumbar spine (above the bladder, which
  lies in front and is hot in both views) over strips either side beyond the kidneys.

The score is ln(face) - ln(spine): positive = anterior. One frame alone is a weak witness (on
phantom v2.3, seed 8, 30 subjects: anterior scores -0.45..+0.45, 7 of them 0 or below;
posterior -0.97..-0.11). The two frames of one subject are a strong one: the anterior's score
exceeded the posterior's in 60 of 60 (seeds 3 and 8), by 0.34 or more.
Hence :func:`decide_pair` (the index's rule for a study of two unlabelled frames) and the
margins below.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

MASK_SIGMA = 3.0  # px; smoothing before the body outline is thresholded (noise, not anatomy)
# Smallest score difference at which two frames of one study are told apart (phantom: >= 0.34).
PAIR_MARGIN = 0.15
# Smallest |score| at which one frame alone is decided (phantom: no wrong frame beyond 0.45,
# the real NM1 scan scores +0.24, so it is left to --view).
SINGLE_MARGIN = 0.5
# A whole-body view is tall: 1024 x 256 is 4:1; spot views and screen captures are not.
ASPECT_RANGE = (2.5, 6.0)
# Body over background counts: 21-214 on phantom v2.3 and the real NM1 scan, 1.03-1.07 on
# Poisson or uniform noise, whose "outline" is where the smoothed noise happens to be high.
MIN_CONTRAST = 3.0
MIN_ROWS = 64  # the cues' strips are a few percent of the height: fewer rows hold no anatomy


@dataclass(frozen=True)
class Body:
    """Body outline of a frame: mask, first and last body row, per-row left/right edge."""

    mask: np.ndarray
    top: int
    bottom: int
    left: np.ndarray  # first body column per row (-1 outside the body)
    right: np.ndarray

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    def row(self, frac: float) -> int:
        return int(round(self.top + frac * (self.height - 1)))


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (hand-written: scikit-image is not a dependency of the project)."""
    hist, edges = np.histogram(values, bins=bins)
    mids = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * mids) / np.maximum(w0, 1)
    m1 = ((hist * mids).sum() - np.cumsum(hist * mids)) / np.maximum(w1, 1)
    return float(mids[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def body_outline(img: np.ndarray) -> Body:
    """Largest connected region above Otsu's threshold of log counts (smoothed), holes filled.

    Raises ValueError when the frame shows no body (empty or flat).

    Args:
        img: counts of one frame, rows head to feet.
    """
    sm = ndi.gaussian_filter(img.astype(np.float32), MASK_SIGMA)
    pos = sm[sm > 0]
    if pos.size < 100 or np.ptp(pos) <= 0:
        raise ValueError("the frame holds no body (no counts, or flat)")
    # Log counts, floored relative to the median: the outline does not change with exposure.
    floor = 0.01 * float(np.median(pos))
    vals = np.log(np.maximum(pos, floor))
    mask = np.log(np.maximum(sm, floor)) > _otsu(vals)
    lab, n = ndi.label(mask)
    if n == 0:
        raise ValueError("the frame holds no body (nothing above the background)")
    mask = ndi.binary_fill_holes(lab == 1 + int(np.argmax(ndi.sum(mask, lab, range(1, n + 1)))))
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.arange(mask.shape[1])
    left = np.where(mask.any(axis=1), np.where(mask, cols, mask.shape[1]).min(axis=1), -1)
    right = np.where(mask.any(axis=1), np.where(mask, cols, -1).max(axis=1), -1)
    return Body(mask, int(rows[0]), int(rows[-1]), left, right)


def shape_problem(rows: int, cols: int) -> str | None:
    """Why an image of rows x columns is not one whole-body view (or None)."""
    if rows < MIN_ROWS or cols < 1 or not ASPECT_RANGE[0] <= rows / cols <= ASPECT_RANGE[1]:
        return (f"{rows} x {cols} pixels is not one whole-body view's shape (at least "
                f"{MIN_ROWS} rows, {ASPECT_RANGE[0]:g} to {ASPECT_RANGE[1]:g} times as tall "
                "as wide)")
    return None


def body_problem(img: np.ndarray) -> str | None:
    """Why a frame shows no whole body (or None): wrong shape, no outline, or an outline far
    shorter than the field (a hot pixel, a spot view, noise). The thresholds are loose: they
    refuse what is no body scan, not a short patient."""
    problem = shape_problem(*img.shape)
    if problem:
        return problem
    try:
        body = body_outline(np.asarray(img, dtype=np.float64))
    except ValueError as err:
        return str(err)
    if body.height < 0.5 * img.shape[0] or body.mask.sum() < 0.03 * img.size:
        return ("no body outline spanning the field (a spot, noise or a partial view, not a "
                "whole-body scan)")
    img = np.asarray(img, dtype=np.float64)
    contrast = img[body.mask].mean() / max(img[~body.mask].mean(), 1e-9) if (~body.mask).any() \
        else 1.0
    if contrast < MIN_CONTRAST:
        return (f"the counts inside the outline are {contrast:.2f} times those outside (a body "
                f"scan: {MIN_CONTRAST:g} or more): noise or a flat image, not a whole-body scan")
    return None


@dataclass(frozen=True)
class ViewDecision:
    view: str
    face: float  # lower head / upper head
    spine: float  # lumbar midline / paraspinal
    score: float  # ln(face) - ln(spine); > 0 means anterior

    def reason(self) -> str:
        side = "front" if self.view == "anterior" else "back"
        return (f"{self.view}: face/calvarium {self.face:.2f} and lumbar spine/paraspinal "
                f"{self.spine:.2f} give ln(face) - ln(spine) = {self.score:+.2f} "
                f"(> 0: facial bones nearer the camera than the spine, seen from the {side})")


def _strip_mean(img: np.ndarray, body: Body, lo: float, hi: float,
                offsets: tuple[float, float]) -> float:
    """Mean counts of the rows lo..hi (fractions of height) in columns at |dx| in offsets (as
    fractions of height) from the body's midline, taken from the head (never cut by the edge
    of the field, unlike the arms beside the trunk)."""
    r0, r1 = body.row(lo), max(body.row(hi), body.row(lo) + 1)
    h0, h1 = body.row(0.01), body.row(0.1)
    mid = np.median((body.left[h0:h1] + body.right[h0:h1]) / 2)
    a, b = (int(round(o * body.height)) for o in offsets)
    cols = np.arange(img.shape[1])
    d = np.abs(cols - mid)
    sel = (d >= a) & (d <= max(b, a + 1))
    strip = img[r0:r1][:, sel]
    return float(strip.mean()) if strip.size else 0.0


def decide_view(img: np.ndarray) -> ViewDecision:
    """Decide the view of one frame (rows head to feet) from its anatomy.

    Raises ValueError when the frame holds no body.

    Args:
        img: counts of one whole-body frame.
    """
    img = np.asarray(img, dtype=np.float64)
    body = body_outline(img)
    face = _strip_mean(img, body, 0.075, 0.12, (0.0, 0.035))
    calvarium = _strip_mean(img, body, 0.0, 0.06, (0.0, 0.035))
    spine = _strip_mean(img, body, 0.3, 0.37, (0.0, 0.012))
    para = _strip_mean(img, body, 0.3, 0.37, (0.065, 0.085))
    f, s = face / max(calvarium, 1e-9), spine / max(para, 1e-9)
    score = float(np.log(max(f, 1e-9)) - np.log(max(s, 1e-9)))
    return ViewDecision("anterior" if score > 0 else "posterior", f, s, score)


def decide_pair(first: ViewDecision, second: ViewDecision) -> tuple[str, str, float]:
    """The views of two frames of one study, and the margin (score difference) behind them:
    the frame with the higher score is the anterior."""
    margin = abs(first.score - second.score)
    if first.score >= second.score:
        return "anterior", "posterior", margin
    return "posterior", "anterior", margin
