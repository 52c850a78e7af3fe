"""The most confused fine-grained class pairs, shown as example images side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.io import atomic_path


def confused_pairs(confusion: np.ndarray, top: int) -> list[tuple[int, int, int]]:
    """(class a, class b, images of a called b plus images of b called a), a < b, most confused
    first, pairs with no confusion left out. ``confusion[i, j]``: images of class i predicted j."""
    confusion = np.asarray(confusion)
    both = confusion + confusion.T
    a, b = np.triu_indices(len(confusion), k=1)
    counts = both[a, b]
    order = np.lexsort((b, a, -counts))
    return [(int(a[i]), int(b[i]), int(counts[i])) for i in order[:top] if counts[i] > 0]


def render_confused_pairs(
    pairs: Sequence[tuple[int, int, int]],
    dataset,
    class_names: Sequence[str],
    path: str | Path,
    per_class: int = 3,
    tile: int = 96,
) -> np.ndarray:
    """One row per pair: ``per_class`` images of class a, a gap, ``per_class`` of class b, with the
    names and the confusion count above. Written as PNG to ``path``; returns the (H, W, 3) image."""
    labels = np.asarray(dataset.labels)
    caption_h, gap = 14, 12
    width = 2 * per_class * tile + gap
    canvas = Image.new("RGB", (width, len(pairs) * (tile + caption_h)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for row, (a, b, count) in enumerate(pairs):
        y = row * (tile + caption_h)
        draw.text((2, y + 1), f"{class_names[a]}  vs  {class_names[b]}  ({count} confused)", fill=(0, 0, 0))
        for side, c in enumerate((a, b)):
            for k, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
                image = dataset.load(int(i)).resize((tile, tile))
                canvas.paste(image, (side * (per_class * tile + gap) + k * tile, y + caption_h))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
    return np.asarray(canvas)
