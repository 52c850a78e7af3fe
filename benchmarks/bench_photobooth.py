"""Frames per second of the whole Photobooth pipeline on CPU at 640x360, with 1 and 4 faces.

    .venv/bin/python benchmarks/bench_photobooth.py [--checkpoint <PhotoboothTask .ckpt>] [--threads 1]

Counts everything after decoding: face crops and blur scores, the face-expression, attention and
kiss models, the quality filter, shutter and indicator. Faces come as boxes (the face detector's
own cost is the face-mesh system's benchmark). Without a checkpoint the task is built with random
weights: the cost does not depend on them."""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from datamodules.synthetic.photobooth import FaceControls, render_clip_frame


def frames_with_faces(num_faces: int, num_frames: int, width: int = 640, height: int = 360):
    rng = np.random.default_rng(0)
    radii = [height * 0.25] + [height * 0.12] * (num_faces - 1)
    xs = np.linspace(0.2, 0.8, num_faces) * width if num_faces > 1 else [width / 2]
    centres = [(float(x), height * (0.55 if i == 0 else 0.3)) for i, x in enumerate(xs)]
    frames, boxes = [], []
    for t in range(num_frames):
        faces = [FaceControls(expression="smile", intensity=float(t % 10) / 10) for _ in range(num_faces)]
        skins = [(200, 160, 120)] * num_faces
        image, b = render_clip_frame(width, height, radii, centres, faces, False, 0, (60, 80, 90), skins)
        frames.append(np.asarray(image))
        boxes.append(np.asarray(b, np.float32))
    del rng
    return frames, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--chunk", type=int, default=16, help="frames per model call")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from core.checkpoint import load_task
    from tasks.photobooth.module import PhotoboothTask
    from tasks.photobooth.pipeline import Photobooth

    task = load_task(args.checkpoint, PhotoboothTask) if args.checkpoint else PhotoboothTask()
    booth = Photobooth(task, chunk=args.chunk)
    print(f"Photobooth pipeline, 640x360, CPU, {args.threads} thread(s), chunk {args.chunk}, {args.frames} frames")
    for num_faces in (1, 4):
        frames, boxes = frames_with_faces(num_faces, args.frames)
        booth.run(frames[: args.chunk], boxes[: args.chunk])  # warm-up
        start = time.perf_counter()
        result = booth.run(frames, boxes)
        elapsed = time.perf_counter() - start
        print(
            f"  {num_faces} face(s): {args.frames / elapsed:6.1f} frames/s "
            f"({1000 * elapsed / args.frames:5.1f} ms/frame, {len(result.shots)} shots)"
        )


if __name__ == "__main__":
    main()
