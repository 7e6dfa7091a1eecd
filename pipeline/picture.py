"""Labelled picture grids: greyscale tiles with column titles, row labels and per-tile captions, as one
8-bit image (white background, black text), so that a saved sheet says what each tile is."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

GAP = 2        # px of white between tiles
PAD = 3        # px around a text line
MAX_LABEL = 28  # characters of a row label kept (the end of a long id is the distinctive part)


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_size(text: str) -> tuple[int, int]:
    if not text:
        return 0, 0
    left, top, right, bottom = _font().getbbox(text)
    return right - min(left, 0), bottom - min(top, 0)


def short_label(text: str, limit: int = MAX_LABEL) -> str:
    """`text`, or `...` and its last limit-3 characters."""
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def to_uint8(tile: np.ndarray) -> np.ndarray:
    """A [H, W] image in [0, 1] as 0..255 (clipped, rounded)."""
    return (np.clip(np.asarray(tile, np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def labelled_grid(rows: Sequence[Sequence[np.ndarray]], *, col_titles: Optional[Sequence[str]] = None,
                  row_labels: Optional[Sequence[str]] = None,
                  captions: Optional[Sequence[Sequence[str]]] = None) -> np.ndarray:
    """Rows of [H, W] tiles in [0, 1] (all one size) -> uint8 [height, width]: a title band above the columns,
    a label band left of the rows (a label may hold several lines, "study_0001\npositive CT-3"), and a caption
    line above each tile when `captions` (one per tile)."""
    from PIL import Image, ImageDraw

    tiles = [[to_uint8(t) for t in row] for row in rows]
    h, w = tiles[0][0].shape
    ncols = max(len(r) for r in tiles)
    texts = [[str(t) for t in (col_titles or [])]] + [[str(t) for t in row] for row in (captions or [])]
    # a column is as wide as its widest title or caption, so that no text runs into the next column
    col_w = [max([w] + [_text_size(row[c])[0] + 2 * PAD for row in texts if c < len(row)]) for c in range(ncols)]
    col_x = np.concatenate([[0], np.cumsum([cw + GAP for cw in col_w])]).astype(int)
    line = max(_text_size("Ag")[1], 1) + 2 * PAD
    top = line if col_titles else 0
    cap = line if captions else 0
    labels = [[short_label(part) for part in str(s).split("\n")] for s in row_labels] if row_labels else []
    left = max((_text_size(part)[0] for parts in labels for part in parts), default=0) + 2 * PAD if labels else 0
    h = max([h] + [len(parts) * line for parts in labels if len(parts) > 1])   # as tall as a label of several lines
    height = top + len(tiles) * (cap + h) + (len(tiles) - 1) * GAP
    width = left + int(col_x[ncols]) - GAP
    sheet = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(sheet)
    for c, title in enumerate(col_titles or []):
        draw.text((left + col_x[c] + PAD, PAD), str(title), fill=0, font=_font())
    for r, row in enumerate(tiles):
        y = top + r * (cap + h + GAP)
        if labels:
            y0 = y + cap + h // 2 - len(labels[r]) * line // 2
            for k, part in enumerate(labels[r]):
                draw.text((PAD, y0 + k * line + PAD), part, fill=0, font=_font())
        for c, tile in enumerate(row):
            x = left + int(col_x[c])
            if captions:
                draw.text((x + PAD, y + PAD), str(captions[r][c]), fill=0, font=_font())
            sheet.paste(Image.fromarray(tile), (x + (col_w[c] - w) // 2, y + cap + (h - tile.shape[0]) // 2))
    return np.asarray(sheet)
