#!/usr/bin/env python
"""CPU speed of the face-mesh system: parameters, multiply-adds and latency of the BlazeFace detector
and of the light / full mesh networks, and frames per second of detector + mesh (a frame where the
detector runs) and of tracking (a video frame where the crop comes from the previous mesh).

    python benchmarks/bench_facemesh.py [--threads 1] [--frame 256] [--repeats 50] [--clock wall|cpu]
                                        [--checkpoint <ckpt>]

Without ``--checkpoint`` the networks have random weights (speed does not depend on them); one face
crop per frame is timed. Figures are medians over ``--repeats`` runs after warm-up. On a shared
machine, run it when it is quiet: other jobs inflate every number."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tasks.facemesh.detector import detect_faces  # noqa: E402
from tasks.facemesh.model import blazeface_front, count_parameters, facemesh  # noqa: E402
from tasks.facemesh.pipeline import FaceMeshPipeline  # noqa: E402

CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = time.perf_counter


def median_ms(fn, repeats: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return statistics.median(times) * 1000


def macs(model: torch.nn.Module, size: int) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--frame", type=int, default=256, help="side of the square test frame (px)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--checkpoint", default=None, help="a FaceMeshTask checkpoint (else random weights)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (with 1 thread, the latency on a core of its own "
        "even when other jobs share the machine)",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    variants = [("light", 128), ("full", 192), ("full", 256)]
    detector = blazeface_front().eval()
    meshes = {f"{v}@{s}": facemesh(v, 468, s).eval() for v, s in variants}
    if args.checkpoint:
        from core.checkpoint import load_task
        from tasks.facemesh.module import FaceMeshTask

        task = load_task(args.checkpoint, FaceMeshTask).eval()
        detector = task.detector
        meshes = {f"{task.hparams.variant}@{task.hparams.crop_size}": task.mesh}
    frame = (np.random.default_rng(0).random((args.frame, args.frame, 3)) * 255).astype(np.uint8)
    x = torch.rand(1, 3, 128, 128)
    det_ms = median_ms(lambda: detector(x), args.repeats)
    det_full_ms = median_ms(lambda: detect_faces(frame, detector, 0.5, 0.3), args.repeats)
    print(
        f"threads={args.threads}  frame={args.frame}x{args.frame}  repeats={args.repeats}  clock={args.clock}  "
        f"torch {torch.__version__}"
    )
    print(f"{'network':<14}{'input':>7}{'params':>10}{'MMACs':>9}{'forward ms':>12}")
    print(f"{'blazeface':<14}{128:>7}{count_parameters(detector):>10,}{macs(detector, 128) / 1e6:>9.1f}{det_ms:>12.2f}")
    rows = []
    box = torch.tensor([[0.3, 0.3, 0.7, 0.7]]) * args.frame
    kp = torch.zeros(1, 6, 2)
    kp[0, 0], kp[0, 1] = (
        box[0, :2] + torch.tensor([0.1, 0.15]) * args.frame,
        box[0, :2] + torch.tensor([0.3, 0.15]) * args.frame,
    )
    image = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    for name, mesh in meshes.items():
        size = mesh.input_size
        xm = torch.rand(1, 3, size, size)
        mesh_ms = median_ms(lambda m=mesh, x=xm: m(x), args.repeats)
        pipe = FaceMeshPipeline(detector, mesh, size)
        crop_ms = median_ms(lambda p=pipe: p.mesh_on_crops(image, box, kp), args.repeats)
        print(
            f"{'mesh ' + name:<14}{size:>7}{count_parameters(mesh):>10,}{macs(mesh, size) / 1e6:>9.1f}{mesh_ms:>12.2f}"
        )
        rows.append((name, crop_ms, 1000 / (det_full_ms + crop_ms), 1000 / crop_ms))
    print(f"\ndetector incl. letterbox + decode + weighted NMS on the frame: {det_full_ms:.2f} ms")
    print(f"{'variant':<14}{'mesh+crop ms':>13}{'fps detect+mesh':>17}{'fps tracking':>14}")
    for name, crop_ms, fps_both, fps_track in rows:
        print(f"{name:<14}{crop_ms:>13.2f}{fps_both:>17.1f}{fps_track:>14.1f}")


if __name__ == "__main__":
    main()
