"""Face mesh on your own image or video.

    python -m tasks.facemesh.run photo.jpg --checkpoint <run>/checkpoints/last.ckpt [--out results/]
    python -m tasks.facemesh.run clip.mp4 --checkpoint <ckpt> [--no-smoothing] [--obj-frame 10] [--threads 1]

Writes into ``--out`` (default: beside the input, ``<stem>_facemesh/``):

- ``landmarks.json``: per frame, every face's box, 6 keypoints, scores and points (x, y, z pixels;
  z smaller = nearer, relative to the head centre); ``landmarks.npz``: ``points`` (frames, faces,
  N, 3) with NaN where a face is absent, ``boxes``, ``keypoints``, ``scores``, ``face_probs``,
  ``fps``, and ``triangles``.
- ``<stem>_mesh.png`` / ``<stem>_mesh.mp4``: the input with the mesh drawn.
- ``<stem>_mesh.obj``: the mesh of one frame (the first with a face, or ``--obj-frame``).

Images: every face the detector finds. Videos (a file with a video suffix of core/video.py, decoded with
decord): one face tracked from frame to frame as in the paper (the crop follows the previous mesh, the
detector re-runs when the face flag drops), with one-euro smoothing of the output unless ``--no-smoothing``.
Any other file is read as an image, as predict.py reads a file it is given.

A thin wrapper over predict.py's product writer (tasks/facemesh/predict.py, run by
core.prediction.predict_files): the same input finding and readers (datamodules/predict_inputs.py), checkpoint
reader, products and error messages (``python predict.py task=facemesh [product.kind=videos]`` writes them
for many inputs, with resume)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from core.checkpoint import load_task
from core.prediction import predict_files
from core.video import VIDEO_SUFFIXES
from datamodules.predict_inputs import ImageInputs, VideoInputs
from tasks.facemesh.module import FaceMeshTask
from tasks.facemesh.predict import FaceMeshProduct
from tasks.facemesh.runtime import RUNTIMES, default_runtime, use_cpu_threads


def run(
    input_path: str | Path,
    checkpoint: str | Path,
    out: str | Path | None = None,
    smoothing: bool = True,
    obj_frame: int | None = None,
    max_frames: int | None = None,
    runtime: str | None = None,
    threads: int | None = None,
) -> dict:
    """Run the pipeline on ``input_path``; returns {"out": folder, "frames": n, "frames_with_face": n,
    "faces": total faces, "obj_frame": frame of the OBJ}. ``runtime``: ``onnxruntime`` or ``torch`` (default:
    ONNX Runtime where installed; tasks/facemesh/runtime.py); ``threads``: CPU threads of the whole pipeline
    (None: leave torch's and OpenCV's settings alone)."""
    kind = "videos" if Path(input_path).suffix.lower() in VIDEO_SUFFIXES else "images"
    writer = FaceMeshProduct(
        runtime=runtime or default_runtime(),
        input_kind=kind,
        smoothing=smoothing,
        max_frames=max_frames,
        obj_frame=obj_frame,
    )
    inputs = (VideoInputs if kind == "videos" else ImageInputs)(str(input_path))
    (path,) = inputs.paths  # predict.py's finding: a missing file is its FileNotFoundError
    task = load_task(checkpoint, FaceMeshTask)  # weights only; another task's checkpoint is refused
    if threads is not None:
        use_cpu_threads(threads)
    out = Path(out) if out else path.parent / f"{path.stem}_facemesh"
    writer.mesh_name = f"{path.stem}_mesh"
    (record,) = predict_files(task, writer, [(path, out.name)], inputs.read, out.parent)
    return {"out": str(out), **{k: record[k] for k in ("frames", "frames_with_face", "faces", "obj_frame")}}


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
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads of the whole pipeline (torch, ONNX Runtime and OpenCV; default: %(default)s)",
    )
    args = parser.parse_args(argv)
    summary = run(
        args.input,
        args.checkpoint,
        args.out,
        not args.no_smoothing,
        args.obj_frame,
        args.max_frames,
        args.runtime,
        args.threads,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
