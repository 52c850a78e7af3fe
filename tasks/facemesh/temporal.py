"""Jitter and lag of the video pipeline on the data set's clips, with and without smoothing.

``still``: the head does not move (only sensor noise and light flicker change); jitter is the mean
frame-to-frame motion of the predicted points divided by the true inter-ocular distance (0 is
perfect). ``moving``: the head translates and turns; lag is the delay in frames of the predicted
track behind the true one (``tasks.facemesh.smoothing.lag``), and the NME against the true points
shows what the delay costs. Each is reported for the raw stream, the one-euro filter and, for
contrast, the same filter with beta = 0 (a plain low-pass with the same cutoff). Frames where the
pipeline lost the face are left out (``frames_with_face`` counts the others); the filters restart
after such a gap."""

from __future__ import annotations

import numpy as np

from core.video import open_video, read_frames
from tasks.facemesh.pipeline import FaceMeshPipeline, draw_mesh, smooth_track
from tasks.facemesh.smoothing import jitter, lag


def read_clip(path) -> np.ndarray:
    reader = open_video(path)
    return read_frames(reader, range(len(reader)), path)


def _stack(points: list[np.ndarray | None]) -> np.ndarray | None:
    """(T, N, 3) with NaN in frames without a face; None when no frame has one."""
    shape = next((p.shape for p in points if p is not None), None)
    if shape is None:
        return None
    return np.stack([p if p is not None else np.full(shape, np.nan) for p in points])


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
            if found < 2:
                detail["error"] = "the face was found in fewer than 2 frames"
                results[name] = detail
                continue
            for kind, pts in streams.items():
                err = np.nanmean(np.linalg.norm(pts[..., :2] - gt[..., :2], axis=-1).mean(-1) / iod)
                detail[f"nme_{kind}"] = float(err)
                try:
                    if name == "still":
                        detail[f"jitter_{kind}"] = jitter(pts, iod)
                        results["metrics"][f"jitter_{kind}"] = detail[f"jitter_{kind}"]
                    else:
                        detail[f"lag_frames_{kind}"] = lag(pts, gt, max_frames=min(10.0, len(pts) / 3))
                        detail[f"lag_ms_{kind}"] = detail[f"lag_frames_{kind}"] / fps * 1000
                        results["metrics"][f"lag_frames_{kind}"] = detail[f"lag_frames_{kind}"]
                        results["metrics"][f"motion_nme_{kind}"] = detail[f"nme_{kind}"]
                except ValueError as err:  # too few frames with a face for the measure: say so, go on
                    detail["error"] = str(err)
            if name == "still":
                results["metrics"]["jitter_true"] = jitter(gt, iod)
            results[name] = detail
    finally:
        task.train(was_training)
    return results, video
