"""Drawing: icons placed on the grid (the atlas PNG) and the scatter of the layout by class."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from core.io import atomic_write_bytes


def compose_atlas(
    grid_size: int,
    cells: np.ndarray,
    icons: np.ndarray,
    cell_px: int | None = None,
    alpha: np.ndarray | None = None,
    background: int = 255,
) -> Image.Image:
    """The atlas image: icon ``i`` (S, S, 3) drawn at cell ``cells[i]`` = (row, col) of a
    grid_size x grid_size canvas; empty cells stay ``background``. ``alpha`` (M,) in [0, 1] fades
    icons into the background (a class atlas shows attribution this way)."""
    size = cell_px or (icons.shape[1] if len(icons) else 16)
    canvas = np.full((grid_size * size, grid_size * size, 3), background, np.float32)
    for i, (row, col) in enumerate(np.asarray(cells)):
        icon = icons[i]
        if icon.shape[0] != size:
            icon = np.asarray(Image.fromarray(icon).resize((size, size), Image.BICUBIC))
        a = 1.0 if alpha is None else float(alpha[i])
        patch = canvas[row * size : (row + 1) * size, col * size : (col + 1) * size]
        patch[:] = a * icon.astype(np.float32) + (1 - a) * patch
    return Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))


def save_png(image: Image.Image, path: str | Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return atomic_write_bytes(path, buffer.getvalue())


def layout_scatter(
    coords: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    grid_size: int,
    max_points: int = 50000,
    seed: int = 0,
) -> Image.Image:
    """The 2D layout coloured by label, in the atlas's orientation (row 0 at the top), with the
    grid drawn, so the icons can be read against where each class's images fall."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords, labels = np.asarray(coords), np.asarray(labels)
    if len(coords) > max_points:
        rows = np.random.default_rng(seed).choice(len(coords), max_points, replace=False)
        coords, labels = coords[rows], labels[rows]
    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    for c in np.unique(labels):
        pick = labels == c
        name = class_names[c] if c < len(class_names) else str(c)
        ax.scatter(coords[pick, 0], coords[pick, 1], s=4, color=cmap(int(c) % cmap.N), label=name)
    ticks = np.linspace(0, 1, grid_size + 1)
    ax.set_xticks(ticks, minor=True)
    ax.set_yticks(ticks, minor=True)
    ax.grid(which="minor", linewidth=0.3, alpha=0.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(1, 0)
    if len(np.unique(labels)) <= 20:
        ax.legend(markerscale=3, fontsize=7, loc="upper right", bbox_to_anchor=(1.0, 1.0))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
