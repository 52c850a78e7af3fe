"""Time the THUMOS'14 detection mAP on a THUMOS-sized test set: 213 videos x 200 detections,
20 classes, ~14 ground-truth segments per video (3007 in the real test set).

    python benchmarks/bench_talnet_metric.py [--videos 213] [--detections 200] [--repeats 3]"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tasks.talnet.metrics import TemporalActionDetectionMAP, evaluate_detections


def thumos_sized(videos: int, detections: int, classes: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for v in range(videos):
        duration = rng.uniform(30, 600)
        n = rng.poisson(14) + 1
        start = rng.uniform(0, duration - 10, n)
        gt = np.stack([np.full(n, v), rng.integers(0, classes, n), start, start + rng.uniform(1, 10, n)], 1)
        # detections: jittered copies of the ground truth plus background, random scores
        pick = rng.integers(0, n, detections)
        jitter = rng.normal(0, 1.5, (detections, 2))
        seg = np.sort(gt[pick, 2:4] + jitter, axis=1)
        labels = np.where(rng.random(detections) < 0.6, gt[pick, 1], rng.integers(0, classes, detections))
        det = np.concatenate([np.full((detections, 1), v), labels[:, None], seg, rng.random((detections, 1))], 1)
        gts.append(gt), dets.append(det)
    return np.concatenate(dets), np.concatenate(gts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=213)
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    det, gt = thumos_sized(args.videos, args.detections)
    print(
        f"{args.videos} videos, {len(det)} detections, {len(gt)} ground-truth segments, 20 classes, 7 tIoU thresholds"
    )
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        result = evaluate_detections(det, gt, 20)
        times.append(time.perf_counter() - t)
    print(
        f"evaluate_detections: best {min(times):.3f} s, median {np.median(times):.3f} s; "
        f"mAP(0.3:0.7) = {result.average_map:.4f}"
    )
    metric = TemporalActionDetectionMAP(20)
    t = time.perf_counter()
    for v in range(args.videos):
        d, g = det[det[:, 0] == v], gt[gt[:, 0] == v]
        metric.update([v], [torch.from_numpy(d[:, 1:])], [torch.from_numpy(g[:, 1:])])
    t_update = time.perf_counter() - t
    t = time.perf_counter()
    out = metric.compute()
    t_compute = time.perf_counter() - t
    print(
        f"TemporalActionDetectionMAP: update ({args.videos} calls) {t_update:.3f} s, "
        f"compute {t_compute:.3f} s; mAP = {out['mAP']:.4f}"
    )


if __name__ == "__main__":
    main()
