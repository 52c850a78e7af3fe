"""Jitter and lag of the video pipeline on the data set's clips, with and without smoothing.

``still``: the head does not move (only sensor noise and light flicker change); jitter is the mean
frame-to-frame motion of the predicted points divided by the true inter-ocular distance (0 is
perfect). ``moving``: the head translates and turns; lag is the delay in frames of the predicted
track behind the true one (``tasks.facemesh.smoothing.lag``), and the NME against the true points
shows what the delay costs. Each is reported for the raw stream, the one-euro filter and, for
contrast, the same filter with beta = 0 (a plain low-pass with the same cutoff)."""

from __future__ import annotations

import numpy as np

from core.video import open_video, read_frames
from tasks.facemesh.pipeline import FaceMeshPipeline, draw_mesh, smooth_track
from tasks.facemesh.smoothing import jitter, lag


def read_clip(path) -> np.ndarray:
    reader = open_video(path)
    return read_frames(reader, range(len(reader)), path)


def _stack(points: list[np.ndarray | None]) -> np.ndarray | None:
    if not points or any(p is None for p in points):
        return None
    return np.stack(points)


def evaluate_clips(task, clips: dict, smoothing: dict) -> tuple[dict, np.ndarray | None]:
    """{"metrics": {...}, per-clip details}, and the moving clip's frames with the smoothed mesh."""
    was_training = task.training
    pipeline = FaceMeshPipeline.from_task(task)
    topo = pipeline.topology
    a, b = topo.eye_corners
    results: dict = {"smoothing": dict(smoothing), "metrics": {}}
    video = None
    try:
        for name, (path, labels) in clips.items():
            frames = read_clip(path)
            fps = float(labels.get("fps", 30.0))
            results["fps"] = fps
            gt = labels["points3d"][: len(frames)]
            iod = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
            track = pipeline.track(frames)
            found = sum(f is not None for f in track)
            smoothed = smooth_track(track, fps, topo, **smoothing)
            if name == "moving":  # the clip with the smoothed mesh where there is one
                video = np.stack([f if p is None else draw_mesh(f, p, topo) for f, p in zip(frames, smoothed)])
            streams = {
                "raw": _stack([f.points if f is not None else None for f in track]),
                "smoothed": _stack(smoothed),
                "lowpass": _stack(smooth_track(track, fps, topo, **{**smoothing, "beta": 0.0})),
            }
            detail = {"frames": len(frames), "frames_with_face": found}
            if streams["raw"] is None:
                detail["error"] = "the face was lost in some frames; jitter/lag need a full track"
                results[name] = detail
                continue
            for kind, pts in streams.items():
                err = (np.linalg.norm(pts[..., :2] - gt[..., :2], axis=-1).mean(-1) / iod).mean()
                detail[f"nme_{kind}"] = float(err)
                if name == "still":
                    detail[f"jitter_{kind}"] = jitter(pts, iod)
                    results["metrics"][f"jitter_{kind}"] = detail[f"jitter_{kind}"]
                else:
                    detail[f"lag_frames_{kind}"] = lag(pts, gt, max_frames=min(10.0, len(pts) / 3))
                    detail[f"lag_ms_{kind}"] = detail[f"lag_frames_{kind}"] / fps * 1000
                    results["metrics"][f"lag_frames_{kind}"] = detail[f"lag_frames_{kind}"]
                    results["metrics"][f"motion_nme_{kind}"] = detail[f"nme_{kind}"]
            if name == "still":
                results["metrics"]["jitter_true"] = jitter(gt, iod)
            results[name] = detail
    finally:
        task.train(was_training)
    return results, video
