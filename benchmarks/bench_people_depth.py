"""Frames per second of the people-depth inference pipeline on CPU, by stage.

    python benchmarks/bench_people_depth.py [--width 384 --height 224 --repeats 10 --threads 2 --net-width 1.0]

Stages per frame: optical flow (DIS, forward and backward), triangulation + confidence
(relative pose, per-pixel depth, epipolar distance, parallax angle, forward-backward error, the
public loader's masking) and the centred input log depth, and the network (the paper's hourglass at
``--net-width`` times its channels, IDCM inputs; one forward pass). The frame pair is rendered by
the data generator."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from core.flow import dense_flow, forward_backward_error
from datamodules.mannequin_geometry import (
    centred_log_depth,
    epipolar_distance,
    parallax_angle,
    parallax_confidence,
    relative_pose,
    triangulate_depth,
)
from datamodules.synthetic.mannequin_challenge import _look_rotation, _Scene, render_frame
from tasks.people_depth.model import hourglass_depth_net, network_inputs


def _pair(width: int, height: int):
    rng = np.random.default_rng(0)
    scene = _Scene(rng, moving=False)
    fx = 0.9
    K = np.array([[width * fx, 0, width / 2], [0, width * fx, height / 2], [0, 0, 1]])
    frames, poses = [], []
    for i in (0, 2):
        centre = np.array([0.1 * i, 0.0, 0.0])
        c2w = _look_rotation(0.01 * i, 0.05)
        image, _, mask = render_frame(scene, K, c2w, centre, width, height, i)
        frames.append((image, mask))
        poses.append(np.concatenate([c2w.T, (-c2w.T @ centre)[:, None]], axis=1))
    return frames, poses, K


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--height", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--net-width",
        type=float,
        default=1.0,
        help="hourglass channel multiplier (1.0: the paper's network; Table 2 demo: 0.25)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frames, poses, K = _pair(args.width, args.height)
    (frame, mask), (reference, _) = frames
    rotation, translation = relative_pose(poses[0], poses[1])
    flows = {}

    def flow_stage():
        flows["fw"] = dense_flow(frame, reference)
        flows["bw"] = dense_flow(reference, frame)

    def triangulation_stage():
        depth = triangulate_depth(flows["fw"], K, rotation, translation)
        confidence, valid = parallax_confidence(
            forward_backward_error(flows["fw"], flows["bw"]),
            epipolar_distance(flows["fw"], K, rotation, translation),
            parallax_angle(np.where(depth > 0, depth, 1.0), K, rotation, translation),
        )
        valid &= (depth > 0) & ~(mask > 0)
        flows["depth"] = np.where(valid, depth, 0.0).astype(np.float32)
        flows["confidence"] = np.where(valid, confidence, 0.0).astype(np.float32)
        flows["input_log_depth"] = centred_log_depth(flows["depth"])

    model = hourglass_depth_net("IDCM", args.net_width).eval()

    def network_stage():
        batch = {
            "image": torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255,
            "human_mask": torch.from_numpy((mask > 0).astype(np.float32))[None, None],
            "input_log_depth": torch.from_numpy(flows["input_log_depth"])[None, None],
            "confidence": torch.from_numpy(flows["confidence"])[None, None],
        }
        with torch.inference_mode():
            model(network_inputs(batch, "IDCM"))

    stages = {
        "flow (DIS fw+bw)": flow_stage,
        "triangulation+confidence": triangulation_stage,
        "network (hourglass)": network_stage,
    }
    times = {}
    for name, fn in stages.items():
        times[name] = _time(fn, args.repeats)
    total = sum(times.values())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"people-depth pipeline at {args.width}x{args.height}, CPU, {args.threads} threads, "
        f"hourglass width {args.net_width}, load average {load:.1f}"
    )
    for name, seconds in times.items():
        print(f"  {name:28s} {seconds * 1000:8.1f} ms   {1 / seconds:7.1f} fps")
    print(f"  {'total':28s} {total * 1000:8.1f} ms   {1 / total:7.1f} fps")


if __name__ == "__main__":
    main()
