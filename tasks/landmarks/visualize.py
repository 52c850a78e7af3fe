"""Pictures of retrieval results: rows of a query and its top retrieved images, each framed in a colour."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

QUERY = (40, 90, 220)  # blue
RELEVANT = (30, 170, 60)  # green
NOT_RELEVANT = (220, 40, 40)  # red
UNKNOWN = (150, 150, 150)  # grey: no ground truth


def framed_thumbnail_rows(rows: list[list[tuple[Path, tuple[int, int, int]]]], thumb: int = 96) -> Image.Image:
    """One row per list of (image path, frame colour), each image a ``thumb`` px square in a 3 px frame."""
    columns = max(len(cells) for cells in rows)
    canvas = Image.new("RGB", (columns * (thumb + 6), len(rows) * (thumb + 6)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, cells in enumerate(rows):
        for c, (path, colour) in enumerate(cells):
            x, y = c * (thumb + 6), r * (thumb + 6)
            draw.rectangle([x, y, x + thumb + 5, y + thumb + 5], fill=colour)
            with Image.open(path) as image:
                canvas.paste(image.convert("RGB").resize((thumb, thumb)), (x + 3, y + 3))
    return canvas
