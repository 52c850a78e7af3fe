"""The highlight of a video: its top-scoring action, cut out with its context and ready to share.

    python -m tasks.talnet.highlight <video> --checkpoint <ckpt> [--out highlight.mp4]

Extracts the video's snippet features with the extractor settings recorded in the checkpoint (the
settings of the data it was trained on; decord decodes), detects actions, takes the best-scored
detection, extends it by the model's context ratio on each side (the context its classifier saw)
and writes, next to ``--out``: ``<name>.mp4`` (the clip at the source frame rate), ``<name>.gif``
(looping, at most 10 fps and 320 px wide), ``<name>_detections.json`` (every detection of the
video in the ActivityNet results format, plus the chosen highlight) and ``<name>_timeline.png``.
A video that cannot be read, or is shorter than one snippet, gets a clear error."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.io import atomic_path, atomic_write_json
from core.video import VideoDecodeError, open_video, read_frames, write_video
from datamodules.thumos14_extract import SnippetFeatureExtractor, resampled_frame_indices
from datamodules.thumos14_features import collate_videos

GIF_MAX_FPS = 10.0
GIF_MAX_WIDTH = 320


def detect_video(video_path: str | Path, task, extractor: SnippetFeatureExtractor) -> tuple[np.ndarray, float]:
    """Detections (n, 4: label, start, end, score; best first) of one video, and its duration."""
    path = Path(video_path)
    reader = open_video(path)  # FileNotFoundError / VideoDecodeError name the file
    source_fps = float(reader.get_avg_fps())
    if not source_fps > 0:
        raise VideoDecodeError(f"{path}: video reports no frame rate")
    duration = len(reader) / source_fps
    resampled = len(resampled_frame_indices(len(reader), source_fps, extractor.fps))
    if resampled < extractor.num_frames:
        raise ValueError(
            f"{path}: the video lasts {duration:.2f} s ({resampled} frames at {extractor.fps:g} "
            f"fps), shorter than one snippet of {extractor.num_frames} frames "
            f"({extractor.num_frames / extractor.fps:.2f} s): nothing to detect"
        )
    expected = int(task.hparams.feature_dim)
    if extractor.feature_dim != expected:
        raise ValueError(
            f"the {extractor.backbone} extractor gives {extractor.feature_dim} features per stream, "
            f"the checkpoint expects {expected}"
        )
    array = extractor.extract_video(path)
    features = torch.from_numpy(np.ascontiguousarray(array.T, dtype=np.float32))
    d = extractor.feature_dim
    item = {
        "video": path.stem,
        "video_id": 0,
        "features": {"rgb": features[:d], "flow": features[d : 2 * d]},
        "segments": torch.zeros(0, 2),
        "labels": torch.zeros(0, dtype=torch.long),
        "duration": duration,
        "t0": extractor.num_frames / 2.0 / extractor.fps,
        "dt": extractor.feat_stride / extractor.fps,
    }
    task.eval()
    with torch.no_grad():
        detections = task.detect(collate_videos([item]))[0]["detections"].numpy()
    order = np.argsort(-detections[:, 3], kind="stable")
    return detections[order], duration


def cut_clip(video_path: str | Path, start: float, end: float) -> tuple[np.ndarray, float]:
    """Frames (n, H, W, 3) of ``[start, end)`` seconds at the source frame rate, and that rate."""
    reader = open_video(video_path)
    fps = float(reader.get_avg_fps())
    first = max(0, int(np.floor(start * fps)))
    last = min(len(reader), max(first + 1, int(np.ceil(end * fps))))
    return read_frames(reader, list(range(first, last)), video_path), fps


def write_gif(path: str | Path, frames: np.ndarray, fps: float) -> Path:
    """A looping GIF of ``frames``, at most ``GIF_MAX_FPS`` and ``GIF_MAX_WIDTH`` px wide."""
    from PIL import Image

    step = max(1, int(np.ceil(fps / GIF_MAX_FPS)))
    frames = frames[::step]
    height, width = frames.shape[1:3]
    scale = min(1.0, GIF_MAX_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [Image.fromarray(f).resize(size) if scale < 1 else Image.fromarray(f) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=round(1000 * step / fps),
            loop=0,  # loop forever
        )
    return path


def _even(frames: np.ndarray) -> np.ndarray:
    """Crop to even height and width (H.264's yuv420p needs them)."""
    h, w = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    return frames[:, :h, :w]


def make_highlight(
    video_path: str | Path,
    task,
    out_dir: str | Path,
    name: str = "highlight",
    extractor_settings: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Detect actions in ``video_path`` with ``task`` (a TALNetTask) and write the highlight files
    into ``out_dir``; returns their paths under the keys ``mp4``, ``gif``, ``detections``
    (JSON) and ``timeline`` (PNG).

    ``extractor_settings`` (``SnippetFeatureExtractor.settings()``) default to the ones recorded
    in the task's checkpoint; a task trained on pre-extracted features has none and must be given
    them."""
    from tasks.talnet.module import activitynet_results
    from tasks.talnet.visualize import plot_timeline

    settings = extractor_settings or getattr(task, "extractor_settings", None)
    if not settings:
        raise ValueError(
            "the checkpoint records no feature-extractor settings (it was trained on "
            "pre-extracted features, or by an older version): pass extractor_settings"
        )
    extractor = SnippetFeatureExtractor(**settings)
    detections, duration = detect_video(video_path, task, extractor)
    if len(detections) == 0:
        raise ValueError(f"{video_path}: no action detected, so no highlight")
    names = list(getattr(task, "class_names", None) or [])
    if len(names) != task.num_classes:
        names = [f"class_{c}" for c in range(task.num_classes)]
    label, start, end, score = (float(x) for x in detections[0])
    context = float(task.hparams.context_ratio) * (end - start)
    clip = (max(0.0, start - context), min(duration, end + context))
    frames, fps = cut_clip(video_path, *clip)
    out_dir = Path(out_dir)
    paths = {
        "mp4": out_dir / f"{name}.mp4",
        "gif": out_dir / f"{name}.gif",
        "detections": out_dir / f"{name}_detections.json",
        "timeline": out_dir / f"{name}_timeline.png",
    }
    write_video(paths["mp4"], _even(frames), fps=fps)
    write_gif(paths["gif"], frames, fps)
    video = Path(video_path).stem
    output = {
        "video": video,
        "duration": duration,
        "detections": detections,
        "segments": np.zeros((0, 2)),
        "labels": np.zeros(0, dtype=np.int64),
    }
    record = activitynet_results([output], names)
    record["highlight"] = {
        "video": str(video_path),
        "label": names[int(label)],
        "score": score,
        "segment": [start, end],
        "clip": list(clip),
        "context_ratio": float(task.hparams.context_ratio),
    }
    atomic_write_json(paths["detections"], record)
    plot_timeline([output], names, paths["timeline"])
    return paths


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video", help="any video decord can read")
    parser.add_argument("--checkpoint", required=True, help="a TALNetTask checkpoint (.ckpt)")
    parser.add_argument("--out", default="highlight.mp4", help="the MP4 to write; the rest beside it")
    args = parser.parse_args(argv)
    from core.checkpoint import load_task
    from tasks.talnet.module import TALNetTask

    task = load_task(args.checkpoint, TALNetTask)
    out = Path(args.out)
    paths = make_highlight(args.video, task, out.parent, out.stem)
    for key, path in paths.items():
        print(f"{key:>10s}  {path}")
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
