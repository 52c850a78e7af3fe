"""Pictures of retrieval results: rows of a query and its top retrieved images, each framed in a
colour, with caption lines (image id, score, right/wrong) under each image."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from core.images import decode_image

QUERY = (40, 90, 220)  # blue
RELEVANT = (30, 170, 60)  # green
NOT_RELEVANT = (220, 40, 40)  # red
UNKNOWN = (150, 150, 150)  # grey: no ground truth
LINE_HEIGHT = 12  # PIL's default font: 10 px, about 6 px per character


def caption_font() -> ImageFont.ImageFont:
    """PIL's default font (shipped with Pillow: no font file to find)."""
    return ImageFont.load_default()


def framed_thumbnail_rows(rows: list[list[tuple]], thumb: int = 96) -> Image.Image:
    """One row per list of cells ``(image path, frame colour[, caption lines])``: each image a ``thumb``
    px square in a 3 px frame, its caption lines (ids are cut to the cell's width) written under it."""
    columns = max(len(cells) for cells in rows)
    lines = max((len(cell[2]) for cells in rows for cell in cells if len(cell) > 2), default=0)
    cell_w, cell_h = thumb + 6, thumb + 6 + lines * LINE_HEIGHT
    canvas = Image.new("RGB", (columns * cell_w, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    font = caption_font()
    for r, cells in enumerate(rows):
        for c, cell in enumerate(cells):
            path, colour = cell[0], cell[1]
            x, y = c * cell_w, r * cell_h
            draw.rectangle([x, y, x + thumb + 5, y + thumb + 5], fill=colour)
            canvas.paste(decode_image(path, what="image").resize((thumb, thumb)), (x + 3, y + 3))
            for n, text in enumerate(cell[2] if len(cell) > 2 else []):
                draw.text((x + 3, y + thumb + 6 + n * LINE_HEIGHT), text[: cell_w // 6], fill=colour, font=font)
    return canvas
