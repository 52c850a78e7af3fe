#!/usr/bin/env python
"""MediaPipe's own face-mesh runtime on given frames: the other side of benchmarks/bench_facemesh.py.

Runs in a separate virtual environment holding mediapipe==0.10.14 (its pins clash with this project's,
so it is never installed into .venv), as the official evaluators are run beside the project:

    python3.11 -m venv /tmp/mpenv && /tmp/mpenv/bin/pip install mediapipe==0.10.14
    /tmp/mpenv/bin/python benchmarks/mediapipe_facemesh.py frames.npy

``frames.npy``: (T, H, W, 3) uint8 RGB. Prints one JSON line: per mode (``detect_mesh``: static-image mode,
the detector and the mesh on every frame; ``tracking``: video mode, the mesh follows the previous
frame's face) the frames, this process's CPU seconds and wall seconds, and the frames with a face.
Imports numpy, mediapipe and the standard library only."""

from __future__ import annotations

import argparse
import json
import time

import mediapipe as mp
import numpy as np


def run(frames: np.ndarray, static_image_mode: bool, repeats: int) -> dict:
    """Process the frames ``repeats`` times after one warm-up pass; time the repeats."""
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=static_image_mode, max_num_faces=1) as face_mesh:
        for frame in frames[:5]:
            face_mesh.process(frame)
        cpu, wall, found = time.process_time(), time.perf_counter(), 0
        for _ in range(repeats):
            for frame in frames:
                found += face_mesh.process(frame).multi_face_landmarks is not None
        return {
            "frames": len(frames) * repeats,
            "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall,
            "with_face": found,
        }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("frames", help="a .npy of (T, H, W, 3) uint8 RGB frames")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    frames = np.load(args.frames)
    result = {
        "mediapipe": mp.__version__,
        "detect_mesh": run(frames, True, args.repeats),
        "tracking": run(frames, False, args.repeats),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
