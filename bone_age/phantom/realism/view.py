"""Which view (anterior / posterior) a whole-body frame shows, from its anatomy alone.

Two cues, both from where the camera sits relative to the skeleton:

- face: the facial bones, orbits and mandible lie in front; seen from the front they are among
  the hottest parts of the head, seen from behind they are attenuated by the whole skull.
  Cue: mean counts of the lower head (face and jaw) over the upper head (calvarium).
- spine: the lumbar vertebrae lie at the back of the abdomen; seen from behind they stand out
  from the soft tissue beside them, seen from the front the abdomen attenuates them.
  Cue: mean counts of a midline strip over the upper lumbar spine (above the bladder, which
  lies in front and is hot in both views) over strips either side beyond the kidneys.

The decision is the sign of ln(face) - ln(spine): positive = anterior. On phantom v2 it is
right for about 96% of frames (a posterior view with a bright face and a faint spine can
pass for anterior); tests/test_phantom_realism.py checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .measures import Body, body_outline

VIEWS = ("anterior", "posterior")


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
    return float(img[r0:r1][:, sel].mean())


def decide_view(img: np.ndarray) -> ViewDecision:
    """Decide the view of one frame (rows head to feet) from its anatomy.

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
