#!/usr/bin/env python
"""The project's face mesh (MediaPipe's imported networks through tasks/facemesh's pipeline) against
MediaPipe's own solutions.face_mesh, run beside it in its own environment, on real photographs.

    make mediapipe-models
    python3.11 -m venv /tmp/mpenv && /tmp/mpenv/bin/pip install mediapipe==0.10.14
    .venv/bin/python benchmarks/compare_facemesh_mediapipe.py --mediapipe-python /tmp/mpenv/bin/python

Photographs that installed packages ship (scikit-image's astronaut and camera, matplotlib's Grace Hopper)
and two of them rotated and scaled. Prints per photo the inter-ocular distance (MediaPipe's outer eye
corners 33 and 263) and the mean and largest distance over the 468 vertices in % of it (2D), and the mean
|dz|. MediaPipe's pixels put a pixel's centre at integers, ours at + 0.5: its points are shifted by half
a pixel before the comparison (the ``raw`` column compares them unshifted)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import matplotlib.cbook  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data as skimage_data  # noqa: E402

from core.checkpoint import load_task  # noqa: E402
from tasks.facemesh.module import FaceMeshTask  # noqa: E402
from tasks.facemesh.pipeline import FaceMeshPipeline  # noqa: E402


def photographs() -> dict[str, np.ndarray]:
    astronaut = skimage_data.astronaut()
    hopper = np.asarray(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))
    h, w = hopper.shape[:2]
    rotate = cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0)
    shrink = cv2.getRotationMatrix2D((256, 256), -25, 0.8)
    return {
        "astronaut": astronaut,
        "grace_hopper": hopper,
        "grace_hopper_rot20": cv2.warpAffine(hopper, rotate, (w, h), borderMode=cv2.BORDER_REFLECT),
        "astronaut_rot-25_s0.8": cv2.warpAffine(astronaut, shrink, (512, 512), borderMode=cv2.BORDER_REFLECT),
        "camera": np.repeat(skimage_data.camera()[..., None], 3, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mediapipe-python", required=True, help="python of an environment with mediapipe==0.10.14")
    parser.add_argument("--checkpoint", default=str(ROOT / "data" / "mediapipe" / "facemesh_mediapipe.ckpt"))
    args = parser.parse_args()
    photos = photographs()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(Path(tmp) / "photos.npz", **photos)
        script = ROOT / "benchmarks" / "mediapipe_facemesh_landmarks.py"
        subprocess.run(
            [args.mediapipe_python, str(script), f"{tmp}/photos.npz", f"{tmp}/mp.json"],
            check=True,
            stderr=subprocess.DEVNULL,
        )
        reference = json.loads((Path(tmp) / "mp.json").read_text())
    pipeline = FaceMeshPipeline.from_task(load_task(args.checkpoint, FaceMeshTask))
    print(f"{'photo':24}{'faces':>7}{'IOD px':>8}{'mean %IOD':>11}{'max %IOD':>10}{'|dz| %IOD':>11}{'raw mean':>10}")
    for name, photo in photos.items():
        ours = pipeline.process_image(photo)
        theirs = reference[name]
        faces = f"{len(ours)}/{len(theirs)}"
        if len(ours) != 1 or len(theirs) != 1:
            print(f"{name:24}{faces:>7}  (one face each expected)")
            continue
        p, q = ours[0].points, np.array(theirs[0])
        raw = np.linalg.norm(p[:, :2] - q[:, :2], axis=1)
        q[:, :2] += 0.5
        iod = np.linalg.norm(q[33, :2] - q[263, :2])
        err = np.linalg.norm(p[:, :2] - q[:, :2], axis=1) / iod * 100
        dz = np.abs(p[:, 2] - q[:, 2]).mean() / iod * 100
        row = f"{name:24}{faces:>7}{iod:8.1f}{err.mean():11.4f}{err.max():10.4f}{dz:11.4f}"
        print(f"{row}{raw.mean() / iod * 100:10.3f}")


if __name__ == "__main__":
    main()
