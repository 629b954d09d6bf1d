"""A whole-body frame's anatomy: its body outline, and which view (anterior / posterior) it shows.

Moved here from phantom/realism so that the indexer (data/) can use it for cameras that write
no view code; phantom/realism imports it from here (data/ may not import phantom/realism).

The view rests on two cues, both from where the camera sits relative to the skeleton:

- face: the facial bones, orbits and mandible lie in front; seen from the front they are among
  the hottest parts of the head, seen from behind they are attenuated by the whole skull.
- spine: the lower thoracic and lumbar vertebrae lie at the back of the trunk; seen from behind
  they are the hottest column of the trunk, seen from the front the chest and abdomen
  attenuate them.

Both are read as *ranks*: each pixel's share of the body's pixels that are no brighter than it.
Ranks do not change under any increasing display processing (windowing, gamma, log), so the
same rule holds for raw counts (DICOM) and for 8-bit renders. The frame is first brought to
384 x 96 pixels, so that the regions hold about the same number of pixels on every matrix.

The score is a logistic regression of the view on the two ranks (positive = anterior), fitted
on the 47 real views of the development half of ../shared/data/real-renders (public BS-80K
scans, 26 anterior, 21 posterior) and checked, not fitted, on the real NM1 DICOM and the
phantom (docs/dicom-and-privacy.md, "Views from the anatomy", has the figures):

- one frame alone is a weak witness: leave-one-out, 1 of 47 real frames on the wrong side of
  0, the worst at -0.50; so a frame alone is decided only at |score| >= SINGLE_MARGIN;
- the two frames of one study are a strong one: over all 546 anterior x posterior
  combinations of real views (different patients, so harder than one patient's two views),
  each scored by a model refitted without both, the anterior scored higher in 546 of 546
  (smallest difference 0.26, 1st percentile 0.98, median 8.35). A study is decided at a
  difference >= PAIR_MARGIN and left to --view below it.

The regions were placed where the real anterior and posterior views differ most (their mean
rank maps), on the same 47 views: the cross-validation refits the weights, not the regions.
The phantom (v2.3, seeds 3 and 8, 60 subjects) was not used to fit: its pairs differ by 3.66 or
more, so its studies stay decided.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

MASK_SIGMA = 3.0  # px; smoothing before the body outline is thresholded (noise, not anatomy)
# Smallest score difference at which two frames of one study are told apart. Real views,
# cross-validated: no pair below +0.26, 4% of pairs below 2.0 (left to --view); an increasing
# display processing or Poisson noise moved one frame's score by up to 1.8. A swap needs a
# difference of -2.0, 2.3 beyond the worst real pair seen.
PAIR_MARGIN = 2.0
# Smallest |score| at which one frame alone is decided: real frames, cross-validated, reach
# -0.50 on the wrong side, and a processing moves a score by up to 1.8. The real NM1 scan
# scores +3.1 (anterior): alone it is left to --view.
SINGLE_MARGIN = 4.0
# The view's logistic regression (see the module's docstring): score = FACE_W * face rank
# + SPINE_W * spine rank + BIAS; sklearn LogisticRegression(C=1000) on the 47 real views.
FACE_W, SPINE_W, BIAS = 33.38, -62.13, 21.64
WORK_SHAPE = (384, 96)  # rows x columns the cues are read on (a 4:1 whole-body field)
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
    face: float  # mean rank (0..1 among the body's pixels) of the face and jaw
    spine: float  # mean rank of the lower thoracic and lumbar spine
    score: float  # the view's logistic regression; > 0 means anterior

    def reason(self) -> str:
        side = "front" if self.view == "anterior" else "back"
        return (f"{self.view}: face rank {self.face:.2f} and lower spine rank {self.spine:.2f} "
                f"(shares of the body's pixels no brighter) give a score of {self.score:+.2f} "
                f"(> 0: facial bones nearer the camera than the spine, seen from the {side})")


def _strip_mean(img: np.ndarray, body: Body, lo: float, hi: float,
                offsets: tuple[float, float]) -> float:
    """Mean of the rows lo..hi (fractions of height) in columns at |dx| in offsets (as
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


def _working(img: np.ndarray) -> np.ndarray:
    """The frame on WORK_SHAPE: smoothed before it is shrunk (no aliasing of counting noise),
    linear interpolation."""
    zoom = (WORK_SHAPE[0] / img.shape[0], WORK_SHAPE[1] / img.shape[1])
    sigma = [1 / z / 2.5 for z in zoom]
    if max(sigma) > 0.3:
        img = ndi.gaussian_filter(img, sigma)
    return ndi.zoom(img, zoom, order=1)


def decide_view(img: np.ndarray) -> ViewDecision:
    """Decide the view of one frame (rows head to feet) from its anatomy.

    Raises ValueError when the frame holds no body.

    Args:
        img: counts (or display values) of one whole-body frame.
    """
    img = _working(np.asarray(img, dtype=np.float64))
    body = body_outline(img)
    # Ranks among the body's pixels: unchanged by any increasing display processing.
    inside = np.sort(img[body.mask])
    rank = np.searchsorted(inside, img, side="right") / inside.size
    face = _strip_mean(rank, body, 0.08, 0.12, (0.0, 0.02))
    spine = _strip_mean(rank, body, 0.26, 0.36, (0.0, 0.03))
    score = FACE_W * face + SPINE_W * spine + BIAS
    return ViewDecision("anterior" if score > 0 else "posterior", face, spine, float(score))


def decide_pair(first: ViewDecision, second: ViewDecision) -> tuple[str, str, float]:
    """The views of two frames of one study, and the margin (score difference) behind them:
    the frame with the higher score is the anterior."""
    margin = abs(first.score - second.score)
    if first.score >= second.score:
        return "anterior", "posterior", margin
    return "posterior", "anterior", margin
