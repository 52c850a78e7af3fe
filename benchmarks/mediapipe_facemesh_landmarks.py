#!/usr/bin/env python
"""MediaPipe's own face mesh on photographs: the reference side of benchmarks/compare_facemesh_mediapipe.py.

Runs in a separate virtual environment holding mediapipe==0.10.14 (its pins clash with this project's):

    /tmp/mpenv/bin/python benchmarks/mediapipe_facemesh_landmarks.py photos.npz landmarks.json

``photos.npz``: named (H, W, 3) uint8 RGB arrays. Writes per photo the faces' 468 landmarks as MediaPipe
reports them, scaled to pixels: (x * width, y * height, z * width). solutions.face_mesh in static-image
mode (detector + mesh on each photo), refine_landmarks off (the 468-point model). Imports numpy,
mediapipe and the standard library only."""

from __future__ import annotations

import argparse
import json

import mediapipe as mp
import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", help=".npz of named RGB uint8 photos")
    parser.add_argument("out", help="JSON to write: {name: [face: [[x, y, z] * 468]]}")
    args = parser.parse_args()
    photos = np.load(args.photos)
    out = {}
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=4, refine_landmarks=False) as mesh:
        for name in photos.files:
            image = np.ascontiguousarray(photos[name])
            h, w = image.shape[:2]
            found = mesh.process(image).multi_face_landmarks or []
            out[name] = [[[p.x * w, p.y * h, p.z * w] for p in face.landmark] for face in found]
    with open(args.out, "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
