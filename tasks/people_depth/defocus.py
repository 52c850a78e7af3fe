"""Synthetic defocus (bokeh) from a depth map: the effect the paper demonstrates with its depth.

A thin lens focused at depth f blurs a point at depth d into a disc whose radius grows with
|1/f - 1/d|; here r(d) = aperture * |1 - f / d| pixels, clipped at ``max_radius``. Pixels with
r < 0.5 (blur below half a pixel) are in focus and keep their exact values. The command that
renders a clip with a trained model is ``python -m tasks.people_depth.render_video``."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from core.video import write_video


def blur_radius(depth: np.ndarray, focus_depth: float, aperture: float, max_radius: float) -> np.ndarray:
    """Circle-of-confusion radius in pixels per pixel (0 where depth is unknown)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = aperture * np.abs(1.0 - focus_depth / depth)
    return np.clip(np.where(depth > 0, r, 0.0), 0.0, max_radius)


def _disc(radius: float) -> np.ndarray:
    size = int(np.ceil(radius)) * 2 + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    # Soft edge: coverage of the pixel by the disc, approximated by distance to the rim.
    kernel = np.clip(radius + 0.5 - np.sqrt(xx**2 + yy**2), 0.0, 1.0).astype(np.float32)
    return kernel / kernel.sum()


def defocus(
    image: np.ndarray,
    depth: np.ndarray,
    focus_depth: float,
    aperture: float = 6.0,
    max_radius: float = 8.0,
    levels: int = 8,
) -> np.ndarray:
    """Defocused RGB uint8 image: each pixel blends the two blur levels that bracket its radius."""
    radius = blur_radius(depth, focus_depth, aperture, max_radius)
    level_radii = np.linspace(0.0, max_radius, levels + 1)
    source = image.astype(np.float32)
    stack = [source] + [cv2.filter2D(source, -1, _disc(r), borderType=cv2.BORDER_REFLECT) for r in level_radii[1:]]
    position = np.clip(np.interp(radius, level_radii, np.arange(levels + 1)), 0, levels)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, levels)
    frac = (position - low)[..., None]
    stack = np.stack(stack)
    rows, cols = np.indices(radius.shape)
    out = (1 - frac) * stack[low, rows, cols] + frac * stack[high, rows, cols]
    out = np.where((radius < 0.5)[..., None], source, out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Inverse depth (disparity) as a colour image, near = bright, for side-by-side videos."""
    inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-6), 0.0)
    lo, hi = np.percentile(inv, 2), np.percentile(inv, 98)
    scaled = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    return cv2.cvtColor(cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def focus_on_people(depth: np.ndarray, human_mask: np.ndarray | None) -> float:
    """The median predicted depth over the people (the whole frame when there are none)."""
    region = depth[(human_mask > 0) & (depth > 0)] if human_mask is not None else depth[depth > 0]
    if region.size == 0:
        region = depth[depth > 0]
    return float(np.median(region))


def side_by_side(image: np.ndarray, depth: np.ndarray, effect: np.ndarray) -> np.ndarray:
    """input | depth | effect, padded to even size for yuv420p video."""
    frame = np.concatenate([image, colorize_depth(depth), effect], axis=1)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


def write_effect_video(
    path: str | Path,
    images,
    depths,
    masks,
    focus_depth: float | None = None,
    aperture: float = 6.0,
    max_radius: float = 8.0,
    fps: float = 10.0,
) -> Path:
    """Defocus every frame of a clip (focus fixed from the first frame's people unless given) and
    write the side-by-side video to ``path``."""
    images, depths = list(images), list(depths)
    masks = list(masks) if masks is not None else [None] * len(images)
    if focus_depth is None:
        focus_depth = focus_on_people(depths[0], masks[0])
    frames = [
        side_by_side(im, d, defocus(im, d, focus_depth * 1.0, aperture, max_radius)) for im, d in zip(images, depths)
    ]
    return write_video(path, frames, fps=fps)
