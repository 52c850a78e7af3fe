"""Face mesh on your own image or video.

    python -m tasks.facemesh.run photo.jpg --checkpoint <run>/checkpoints/last.ckpt [--out results/]
    python -m tasks.facemesh.run clip.mp4 --checkpoint <ckpt> [--no-smoothing] [--obj-frame 10]

Writes into ``--out`` (default: beside the input, ``<stem>_facemesh/``):

- ``landmarks.json``: per frame, every face's box, 6 keypoints, scores and points (x, y, z pixels;
  z smaller = nearer, relative to the head centre); ``landmarks.npz``: ``points`` (frames, faces,
  N, 3) with NaN where a face is absent, ``boxes``, ``keypoints``, ``scores``, ``face_probs``,
  ``fps``, and ``triangles``.
- ``<stem>_mesh.png`` / ``<stem>_mesh.mp4``: the input with the mesh drawn.
- ``<stem>_mesh.obj``: the mesh of one frame (the first with a face, or ``--obj-frame``).

Images: every face the detector finds. Videos (decoded with decord): one face tracked from frame to
frame as in the paper (the crop follows the previous mesh, the detector re-runs when the face flag
drops), with one-euro smoothing of the output unless ``--no-smoothing``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from core.checkpoint import load_task
from core.images import IMAGE_SUFFIXES
from core.io import atomic_path, atomic_write_json
from core.video import VIDEO_SUFFIXES, open_video, read_frames, write_video
from tasks.facemesh.module import FaceMeshTask
from tasks.facemesh.pipeline import FaceMeshPipeline, draw_mesh, smooth_track, write_obj
from tasks.facemesh.runtime import RUNTIMES, check_runtime, default_runtime


def _write_outputs(
    out: Path, stem: str, frames_faces: list[list[dict]], fps: float | None, triangles, num_points: int
) -> None:
    most = max([len(f) for f in frames_faces] + [1])
    t = len(frames_faces)
    pts = np.full((t, most, num_points, 3), np.nan, np.float32)
    boxes = np.full((t, most, 4), np.nan, np.float32)
    kps = np.full((t, most, 6, 2), np.nan, np.float32)
    scores = np.full((t, most), np.nan, np.float32)
    probs = np.full((t, most), np.nan, np.float32)
    for i, faces in enumerate(frames_faces):
        for j, face in enumerate(faces):
            pts[i, j], boxes[i, j], kps[i, j] = face["points"], face["box"], face["keypoints"]
            scores[i, j], probs[i, j] = face["score"], face["face_prob"]
    with atomic_path(out / "landmarks.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                points=pts,
                boxes=boxes,
                keypoints=kps,
                scores=scores,
                face_probs=probs,
                fps=np.float32(fps or 0.0),
                triangles=np.asarray(triangles, np.int32),
            )
    atomic_write_json(
        out / "landmarks.json",
        {
            "input": stem,
            "fps": fps,
            "num_points": num_points,
            "frames": [
                {
                    "frame": i,
                    "faces": [
                        {
                            k: (np.round(np.asarray(v), 2).tolist() if k in ("points", "box", "keypoints") else v)
                            for k, v in face.items()
                        }
                        for face in faces
                    ],
                }
                for i, faces in enumerate(frames_faces)
            ],
        },
        indent=None,
    )


def run(
    input_path: str | Path,
    checkpoint: str | Path,
    out: str | Path | None = None,
    smoothing: bool = True,
    obj_frame: int | None = None,
    max_frames: int | None = None,
    runtime: str | None = None,
) -> dict:
    """Run the pipeline on ``input_path``; returns {"out": folder, "frames": n, "faces": total faces}.
    ``runtime``: ``onnxruntime`` or ``torch`` (default: ONNX Runtime where installed; tasks/facemesh/runtime.py)."""
    with torch.no_grad():
        return _run(input_path, checkpoint, out, smoothing, obj_frame, max_frames, runtime or default_runtime())


def _run(
    input_path: str | Path,
    checkpoint: str | Path,
    out: str | Path | None,
    smoothing: bool,
    obj_frame: int | None,
    max_frames: int | None,
    runtime: str,
) -> dict:
    check_runtime(runtime)
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"{input_path}: input image or video does not exist")
    task = load_task(checkpoint, FaceMeshTask).eval()  # weights only; another task's checkpoint is refused
    suffix = input_path.suffix.lower()
    if suffix not in (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES):
        raise ValueError(
            f"{input_path}: unknown input type {suffix!r}; images: {sorted(IMAGE_SUFFIXES)}, "
            f"videos: {sorted(VIDEO_SUFFIXES)}"
        )
    out = Path(out) if out else input_path.parent / f"{input_path.stem}_facemesh"
    out.mkdir(parents=True, exist_ok=True)
    pipeline = FaceMeshPipeline.from_task(task, runtime=runtime)
    topo = pipeline.topology
    stem = input_path.stem

    if suffix in IMAGE_SUFFIXES:
        bgr = cv2.imread(str(input_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{input_path}: cannot decode image")
        frames = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[None]
        fps = None
        per_frame = [[f.as_json() | {"points": f.points} for f in pipeline.process_image(frames[0])]]
        drawn = frames[0]
        for face in per_frame[0]:
            drawn = draw_mesh(
                drawn,
                np.asarray(face["points"]),
                topo,
                keypoints=np.asarray(face["keypoints"]),
                box=np.asarray(face["box"]),
            )
        with atomic_path(out / f"{stem}_mesh.png") as tmp:
            cv2.imwrite(str(tmp), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    else:
        reader = open_video(input_path)
        n = len(reader) if max_frames is None else min(len(reader), max_frames)
        fps = float(reader.get_avg_fps())
        frames = np.concatenate([read_frames(reader, range(s, min(s + 64, n)), input_path) for s in range(0, n, 64)])
        track = pipeline.track(frames)
        if smoothing:
            smoothed = smooth_track(track, fps, topo, **task.smoothing)
        else:
            smoothed = [f.points if f is not None else None for f in track]
        per_frame = []
        for face, pts in zip(track, smoothed):
            per_frame.append([] if face is None else [face.as_json() | {"points": pts}])
        drawn_frames = []
        for frame, faces in zip(frames, per_frame):
            for face in faces:
                frame = draw_mesh(frame, np.asarray(face["points"]), topo)
            h, w = frame.shape[:2]
            drawn_frames.append(frame[: h - h % 2, : w - w % 2])
        write_video(out / f"{stem}_mesh.mp4", drawn_frames, fps=fps)
    with_face = [i for i, f in enumerate(per_frame) if f]
    _write_outputs(out, stem, per_frame, fps, topo.triangles, topo.num_points)
    chosen = obj_frame if obj_frame is not None else (with_face[0] if with_face else None)
    if chosen is not None:
        if chosen >= len(per_frame) or not per_frame[chosen]:
            raise ValueError(
                f"--obj-frame {chosen}: no face in that frame (faces in {len(with_face)} of {len(per_frame)} frames)"
            )
        write_obj(out / f"{stem}_mesh.obj", np.asarray(per_frame[chosen][0]["points"]), topo)
    return {
        "out": str(out),
        "frames": len(per_frame),
        "frames_with_face": len(with_face),
        "faces": sum(len(f) for f in per_frame),
        "obj_frame": chosen,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.facemesh.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="an image (.png, .jpg, ...) or a video (.mp4, ...)")
    parser.add_argument("--checkpoint", required=True, help="a FaceMeshTask checkpoint (train.py task=facemesh)")
    parser.add_argument("--out", default=None, help="output folder (default: <input stem>_facemesh/ beside it)")
    parser.add_argument("--no-smoothing", action="store_true", help="videos: write the raw landmark stream")
    parser.add_argument("--obj-frame", type=int, default=None, help="frame whose mesh goes to the OBJ")
    parser.add_argument("--max-frames", type=int, default=None, help="videos: only the first N frames")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=default_runtime(),
        help="what runs the networks: onnxruntime (their export, checked equal to PyTorch; the default where "
        "installed) or torch (the reference)",
    )
    args = parser.parse_args(argv)
    summary = run(
        args.input, args.checkpoint, args.out, not args.no_smoothing, args.obj_frame, args.max_frames, args.runtime
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
