"""A contact sheet: the two views of each study whose view the anatomy decided, side by side,
small, so that a person sees a swapped study at a glance (a spine that stands out on the left,
a face on the right).

Only a study's pseudonym and each view's name are written on it: no name, ID, date or path.
Pillow draws it (installed with matplotlib, a dependency of the project).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

VIEW_W, VIEW_H = 56, 224  # one view's thumbnail (a whole-body field is about 4:1)
GAP, LABEL_H, PER_ROW = 6, 26, 8


@dataclass(frozen=True)
class Tile:
    """One study: its pseudonym and, left to right, (view, how it was decided, counts or None
    where the view could not be read back)."""

    label: str
    views: Sequence[tuple[str, str, np.ndarray | None]]


def _thumbnail(counts: np.ndarray | None) -> Image.Image:
    """The view on 0..255 (square root of counts up to their 99.5th percentile: bone and soft
    tissue both visible), shrunk into VIEW_W x VIEW_H; grey where it could not be read."""
    if counts is None or counts.size == 0:
        return Image.new("L", (VIEW_W, VIEW_H), 96)
    c = np.nan_to_num(np.asarray(counts, dtype=np.float64))
    c = np.clip(c - c.min(), 0, None)
    top = float(np.percentile(c, 99.5)) or float(c.max()) or 1.0
    img = Image.fromarray((np.sqrt(np.clip(c / top, 0, 1)) * 255).astype(np.uint8))
    img.thumbnail((VIEW_W, VIEW_H))
    out = Image.new("L", (VIEW_W, VIEW_H), 0)
    out.paste(img, ((VIEW_W - img.width) // 2, (VIEW_H - img.height) // 2))
    return out


def contact_sheet_png(tiles: Sequence[Tile]) -> bytes:
    """The PNG of every tile, PER_ROW studies a row, each labelled with its pseudonym above and
    each view's name (and how it was decided) below."""
    tile_w, tile_h = 2 * VIEW_W + 3 * GAP, VIEW_H + 2 * LABEL_H
    cols = max(1, min(PER_ROW, len(tiles)))
    rows = max(1, -(-len(tiles) // cols))
    sheet = Image.new("L", (cols * tile_w, rows * tile_h), 255)
    draw = ImageDraw.Draw(sheet)
    for k, tile in enumerate(tiles):
        x0, y0 = (k % cols) * tile_w, (k // cols) * tile_h
        draw.text((x0 + GAP, y0 + 4), tile.label, fill=0)
        for j, (view, how, counts) in enumerate(tile.views[:2]):
            x = x0 + GAP + j * (VIEW_W + GAP)
            sheet.paste(_thumbnail(counts), (x, y0 + LABEL_H))
            name = "ANT" if view == "anterior" else "POST"
            draw.text((x, y0 + LABEL_H + VIEW_H + 2), name, fill=0)
            draw.text((x, y0 + LABEL_H + VIEW_H + 13), how, fill=80)
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
