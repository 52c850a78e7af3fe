"""Images of drawn shapes whose class is learnable: the signal behind every image generator.

Class ``c`` draws shape ``c % 10``; with more than ten classes, ``c // 10`` also fixes the hue band,
so up to 10 x 12 classes stay separable. Position, size, colour within the band, background and
noise vary per image, so a model has to learn the shape, not memorize pixels."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "cross", "ring", "star", "hbars", "vbars", "diamond", "plus")
HUE_BANDS = 12


def _colour(rng: np.random.Generator, band: int | None) -> tuple[int, int, int]:
    hue = rng.random() if band is None else (band + rng.uniform(0.15, 0.85)) / HUE_BANDS
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _star(cx: float, cy: float, r: float, points: int = 5) -> list[tuple[float, float]]:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, r, r * 0.45)
    return list(zip(cx + radii * np.cos(angles), cy + radii * np.sin(angles)))


def render_shape(class_index: int, num_classes: int, size: int, rng: np.random.Generator) -> Image.Image:
    """One RGB image of class ``class_index``."""
    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    band = class_index // len(SHAPES) if num_classes > len(SHAPES) else None
    fill = _colour(rng, band)
    r = size * rng.uniform(0.22, 0.36)
    cx, cy = rng.uniform(r, size - r, 2)
    box = (cx - r, cy - r, cx + r, cy + r)
    w = max(1, int(r * 0.35))
    shape = SHAPES[class_index % len(SHAPES)]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    elif shape == "cross":
        draw.line([(cx - r, cy - r), (cx + r, cy + r)], fill=fill, width=w)
        draw.line([(cx - r, cy + r), (cx + r, cy - r)], fill=fill, width=w)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=w)
    elif shape == "star":
        draw.polygon(_star(cx, cy, r), fill=fill)
    elif shape == "hbars":
        for k in range(3):
            y = cy - r + k * r * 0.8
            draw.rectangle((cx - r, y, cx + r, y + r * 0.4), fill=fill)
    elif shape == "vbars":
        for k in range(3):
            x = cx - r + k * r * 0.8
            draw.rectangle((x, cy - r, x + r * 0.4, cy + r), fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "plus":
        draw.rectangle((cx - r, cy - w / 2, cx + r, cy + w / 2), fill=fill)
        draw.rectangle((cx - w / 2, cy - r, cx + w / 2, cy + r), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.0, 0.6)))
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (size, size, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def render_dataset(num_classes: int, per_class: int, size: int, seed: int):
    """Yield (class_index, image) for ``per_class`` images of every class, reproducibly."""
    rng = np.random.default_rng(seed)
    for _ in range(per_class):
        for c in range(num_classes):
            yield c, render_shape(c, num_classes, size, rng)
