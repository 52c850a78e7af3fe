"""Writes a small data set in the raw THUMOS'14 layout: real H.264 mp4 videos with actions of
several classes at known times, and the per-class annotation files (all 20 + Ambiguous).

Each class is a textured disk with its own colour and its own motion over a static textured
background; outside actions the scene is still. Colours and motions are shared between some
classes on purpose: appearance alone confuses one pair, motion alone two others, so each stream
learns most classes and the late fusion of both streams all of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.video import write_video
from datamodules.thumos14 import SPLITS
from datamodules.thumos14_annotations import AMBIGUOUS, THUMOS14_CLASSES

# (RGB colour, motion) per generated class; motions are (dx, dy) pixels per second or "spin".
CLASS_LOOKS = (
    ((230, 40, 40), (40, 0)),  # BaseballPitch: red, rightwards
    ((230, 40, 40), (0, -40)),  # BasketballDunk: red, upwards      (same colour as above)
    ((40, 200, 60), (-40, 0)),  # Billiards: green, leftwards
    ((50, 80, 240), (-40, 0)),  # CleanAndJerk: blue, leftwards     (same motion as above)
    ((240, 220, 40), (0, 40)),  # CliffDiving: yellow, downwards
    ((220, 60, 220), (0, 40)),  # CricketBowling: magenta, downwards (same motion as above)
)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.integers(60, 140, size=(size // 8, size // 8, 1))
    return np.kron(coarse, np.ones((8, 8, 3))).astype(np.float32)


def _disk(size: int, radius: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    stripes = ((xx - cx + yy - cy) // 3) % 2  # texture that moves with the disk, so flow sees it
    return inside, stripes


def _render_video(
    rng: np.random.Generator,
    duration: float,
    fps: float,
    size: int,
    actions: list[tuple[int, float, float]],
) -> list[np.ndarray]:
    bg = _background(rng, size)
    frames = []
    radius = size / 7
    for k in range(round(duration * fps)):
        t = k / fps
        frame = bg + rng.normal(0, 3, bg.shape)  # sensor noise
        for cls, start, end in actions:
            if not start <= t < end:
                continue
            colour, (vx, vy) = CLASS_LOOKS[cls]
            cx = (size / 2 + vx * (t - start) * size / 64) % size
            cy = (size / 2 + vy * (t - start) * size / 64) % size
            inside, stripes = _disk(size, radius, cx, cy)
            shade = 0.75 + 0.25 * stripes[..., None]
            frame = np.where(inside[..., None], np.array(colour, np.float32) * shade, frame)
        frames.append(np.clip(frame, 0, 255).astype(np.uint8))
    return frames


def _sample_actions(
    rng: np.random.Generator, duration: float, num_classes: int, min_action: float
) -> list[tuple[int, float, float]]:
    """1-3 non-overlapping actions of one or two classes, lengths log-uniform from under a second
    up to most of the video."""
    actions: list[tuple[int, float, float]] = []
    classes = rng.choice(num_classes, size=min(2, num_classes), replace=False)
    free = [(0.5, duration - 0.5)]
    for n in range(int(rng.integers(1, 4))):
        free = [f for f in free if f[1] - f[0] >= min_action]
        if not free:
            break
        lo, hi = free.pop(int(rng.integers(len(free))))
        longest = (hi - lo) * (0.85 if n == 0 else 0.6)
        length = float(np.exp(rng.uniform(np.log(min_action), np.log(max(min_action, longest)))))
        start = float(rng.uniform(lo, hi - length))
        cls = int(classes[0] if rng.random() < 0.7 else classes[-1])
        actions.append((cls, round(start, 1), round(start + length, 1)))
        free += [(lo, start - 0.5), (start + length + 0.5, hi)]
    return sorted(actions, key=lambda a: a[1])


def write_thumos14(
    root: str | Path,
    num_validation_videos: int = 24,
    num_test_videos: int = 12,
    num_action_classes: int = 6,
    min_duration: float = 14.0,
    max_duration: float = 28.0,
    min_action: float = 0.6,
    fps: float = 10.0,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write the raw THUMOS'14 layout into ``root``; returns ``root``."""
    if not 1 <= num_action_classes <= len(CLASS_LOOKS):
        raise ValueError(f"num_action_classes must be in 1..{len(CLASS_LOOKS)}")
    if size % 8:
        raise ValueError("size must be a multiple of 8")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("validation", num_validation_videos), ("test", num_test_videos)):
        video_folder, annotation_folder, suffix, _ = SPLITS[split]
        lines: dict[str, list[str]] = {c: [] for c in [*THUMOS14_CLASSES, AMBIGUOUS]}
        for v in range(count):
            name = f"video_{split}_{v + 1:07d}"
            duration = round(float(rng.uniform(min_duration, max_duration)), 1)
            actions = _sample_actions(rng, duration, num_action_classes, min_action)
            frames = _render_video(rng, duration, fps, size, actions)
            write_video(root / video_folder / f"{name}.mp4", frames, fps=fps)
            for cls, start, end in actions:
                lines[THUMOS14_CLASSES[cls]].append(f"{name}  {start:.1f} {end:.1f}")
                if start >= 0.7 and rng.random() < 0.5:  # the moment before an action is ambiguous
                    lines[AMBIGUOUS].append(f"{name}  {start - 0.6:.1f} {start - 0.1:.1f}")
        folder = root / annotation_folder
        folder.mkdir(parents=True, exist_ok=True)
        for label, rows in lines.items():
            (folder / f"{label}_{suffix}.txt").write_text("".join(r + "\n" for r in rows))
    return root


def write_corrupt_video(path: str | Path, source: str | Path | None = None) -> Path:
    """A truncated mp4 (the first bytes of a real one, or junk) for bad-input tests."""
    path = Path(path)
    data = Path(source).read_bytes()[:600] if source else b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64
    path.write_bytes(data)
    return path
