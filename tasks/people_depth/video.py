"""Depth videos of a clip: input | predicted depth | synthetic defocus, from any depth predictor.

Kept out of the LightningModule, which calls ``render_clip_video`` at the end of testing; this file
does not import the module (its command line is tasks/people_depth/render_video.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.media import log_video as _log_video
from tasks.people_depth.defocus import write_effect_video

VIDEO_NAME = "people_depth_side_by_side.mp4"
BATCH_KEYS = ("image", "human_mask", "input_log_depth", "confidence", "keypoints")


def render_clip_video(
    task,
    dataset,
    clip: int,
    path: str | Path,
    focus_depth: float | None = None,
    aperture: float | None = None,
    max_radius: float = 8.0,
    fps: float | None = None,
    max_frames: int | None = None,
) -> Path:
    """Predict depth with ``task.predict_depth`` for the frames of ``clip`` in ``dataset`` and write
    input | depth | defocus (focused on the people) to ``path``."""
    indices = [i for i, s in enumerate(dataset.samples) if s.clip == clip][: max_frames or None]
    if not indices:
        raise ValueError(f"clip {clip} has no samples")
    device = next(task.parameters()).device
    images, depths, masks = [], [], []
    for start in range(0, len(indices), 8):
        items = [dataset[i] for i in indices[start : start + 8]]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in BATCH_KEYS if k in items[0]}
        depth = task.predict_depth(batch).cpu().numpy()[:, 0]
        for it, d in zip(items, depth):
            images.append((it["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
            depths.append(d)
            masks.append(it["human_mask"][0].numpy())
    hparams = getattr(task, "hparams", {})
    return write_effect_video(
        path,
        images,
        depths,
        masks,
        focus_depth=focus_depth,
        aperture=aperture if aperture is not None else hparams.get("video_aperture", 6.0),
        max_radius=max_radius,
        fps=fps or hparams.get("video_fps", 10.0),
    )


def log_video(target, key: str, path: Path, fps: float = 10.0) -> None:
    """The rendered video to the run's experiment loggers (W&B, TensorBoard, CSV; core.media)."""
    _log_video(target, key, path, fps=fps)
