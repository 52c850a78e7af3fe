#!/usr/bin/env python
"""CPU speed of the face-mesh system: parameters, multiply-adds and latency of the BlazeFace detector
and of the light / full mesh networks, and frames per second of detector + mesh (a frame where the
detector runs) and of tracking (a video frame where the crop comes from the previous mesh).

    python benchmarks/bench_facemesh.py [--threads 1] [--frame 256] [--repeats 50] [--clock wall|cpu]
                                        [--checkpoint <ckpt>] [--runtime torch|onnxruntime]
    python benchmarks/bench_facemesh.py --runtimes [--imported data/mediapipe/facemesh_mediapipe.ckpt]
                                        [--mediapipe-env /tmp/mpenv] [--photo <image>] [--frames 60]

Without ``--checkpoint`` the networks have random weights (speed does not depend on them); one face
crop per frame is timed. Figures are medians over ``--repeats`` runs after warm-up. On a shared
machine, run it when it is quiet: other jobs inflate every number.

``--runtimes``: the imported MediaPipe networks (``make mediapipe-models``) through the project's whole
pipeline on the frames of a real photograph moved and scaled frame by frame (default: scikit-image's
astronaut, 512x512), once in PyTorch and once exported to ONNX Runtime (``runtime="onnxruntime"``, the
tools' default: core/onnx_runtime.py, checked against PyTorch), and, with ``--mediapipe-env``, MediaPipe's
own runtime on the same frames in that environment (benchmarks/mediapipe_facemesh.py: mediapipe==0.10.14 is
never installed into .venv). ``--passes`` over the clip each; frames per CPU-second of each process (all its
threads), and the ratio to MediaPipe. ``--threads`` is the budget of torch, ONNX Runtime and OpenCV alike."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from tasks.facemesh.detector import detect_faces  # noqa: E402
from tasks.facemesh.model import blazeface_front, count_parameters, facemesh  # noqa: E402
from tasks.facemesh.pipeline import FaceMeshPipeline  # noqa: E402
from tasks.facemesh.runtime import RUNTIMES, inference_network, use_cpu_threads  # noqa: E402

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


def test_frames(photo: str | None, count: int) -> tuple[np.ndarray, str]:
    """``count`` RGB frames of a real photograph, shifted (up to 18 px) and scaled (up to 4.5 %) back and
    forth frame by frame: a clip to track, and the same frames for detect+mesh."""
    import cv2

    if photo:
        image = cv2.imread(photo)
        if image is None:
            raise SystemExit(f"{photo}: cannot decode the image")
        image, name = cv2.cvtColor(image, cv2.COLOR_BGR2RGB), Path(photo).name
    else:
        from skimage import data

        image, name = data.astronaut(), "scikit-image astronaut"
    h, w = image.shape[:2]
    frames = []
    for k in range(count):
        step = min(k % 20, 20 - k % 20)  # 0..10..0
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, 1.0 + 0.0045 * step)
        matrix[:, 2] += (1.8 * step, 0.9 * step)
        frames.append(cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REFLECT))
    return np.stack(frames), f"{name} ({w}x{h})"


def fps_per_cpu_second(run, frames: np.ndarray, passes: int) -> tuple[float, int]:
    """(frames per CPU-second of this process, frames with a face per pass) of ``passes`` runs of
    ``run(frames)`` after a warm-up."""
    run(frames[:5])
    start = time.process_time()
    found = [run(frames) for _ in range(passes)]
    return passes * len(frames) / (time.process_time() - start), found[-1]


def mediapipe_fps(env: str, frames: np.ndarray, passes: int) -> dict[str, tuple[float, int]]:
    """MediaPipe's runtime on ``frames``, in the virtual environment ``env`` (benchmarks/mediapipe_facemesh.py)."""
    python = Path(env) / "bin" / "python"
    if not python.exists():
        raise SystemExit(
            f"--mediapipe-env {env}: no bin/python (make it with: python3.11 -m venv {env} && "
            f"{env}/bin/pip install mediapipe==0.10.14)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "frames.npy", frames)
        runner = Path(__file__).resolve().parent / "mediapipe_facemesh.py"
        command = [str(python), str(runner), str(Path(tmp) / "frames.npy"), "--repeats", str(passes)]
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"MediaPipe in {env} failed: {done.stderr.strip().splitlines()[-1:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        mode: (result[mode]["frames"] / result[mode]["cpu_s"], result[mode]["with_face"] // passes)
        for mode in ("detect_mesh", "tracking")
    } | {"version": result["mediapipe"]}


def compare_runtimes(args) -> None:
    """Detect+mesh and tracking per CPU-second: PyTorch, ONNX Runtime, MediaPipe (module docstring)."""
    try:
        import onnxruntime
    except ImportError:
        raise SystemExit("--runtimes needs ONNX Runtime (a dependency of the project): pip install -e .") from None

    from core.checkpoint import load_task
    from tasks.facemesh.module import FaceMeshTask

    if not Path(args.imported).exists():
        raise SystemExit(f"{args.imported}: no imported MediaPipe checkpoint; run `make mediapipe-models`")
    task = load_task(args.imported, FaceMeshTask).eval()
    frames, name = test_frames(args.photo, args.frames)
    torch_pipe = FaceMeshPipeline.from_task(task, runtime="torch")
    ort_pipe = FaceMeshPipeline.from_task(task, runtime="onnxruntime")  # threads: torch's (--threads)
    rows = {}
    for label, pipe in (("PyTorch (reference)", torch_pipe), ("ONNX Runtime (product default)", ort_pipe)):
        rows[label] = {
            "detect_mesh": fps_per_cpu_second(
                lambda f, p=pipe: sum(bool(p.process_image(x)) for x in f), frames, args.passes
            ),
            "tracking": fps_per_cpu_second(
                lambda f, p=pipe: sum(r is not None for r in p.track(f)), frames, args.passes
            ),
        }
    mediapipe = None
    if args.mediapipe_env:
        mediapipe = mediapipe_fps(args.mediapipe_env, frames, args.passes)
        rows[f"MediaPipe {mediapipe.pop('version')} (its runtime)"] = mediapipe
    print(
        f"{len(frames)} frames of {name}, moved and scaled frame by frame; torch {torch.__version__} and "
        f"onnxruntime {onnxruntime.__version__} with {args.threads} thread(s) (OpenCV's too); "
        f"{args.passes} passes each, CPU time of the process"
    )
    ratio = "ratio to MediaPipe" if mediapipe else "(no --mediapipe-env: no ratio)"
    print(f"{'runtime':<34}{'detect+mesh fps/CPU-s':>22}{'tracking fps/CPU-s':>20}{'frames with a face':>21}   {ratio}")
    for label, row in rows.items():
        (fps_d, found_d), (fps_t, found_t) = row["detect_mesh"], row["tracking"]
        line = f"{label:<34}{fps_d:>22.1f}{fps_t:>20.1f}{f'{found_d} / {found_t}':>21}"
        if mediapipe:
            line += f"   {fps_d / mediapipe['detect_mesh'][0]:.2f}x / {fps_t / mediapipe['tracking'][0]:.2f}x"
        print(line)


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
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="torch", help="what runs the networks in the table (not --runtimes)"
    )
    parser.add_argument("--runtimes", action="store_true", help="PyTorch vs ONNX Runtime vs MediaPipe (see above)")
    parser.add_argument("--imported", default="data/mediapipe/facemesh_mediapipe.ckpt", help="--runtimes: checkpoint")
    parser.add_argument("--mediapipe-env", default=None, help="--runtimes: a virtualenv with mediapipe==0.10.14")
    parser.add_argument("--photo", default=None, help="--runtimes: the photograph (default: scikit-image's astronaut)")
    parser.add_argument("--frames", type=int, default=60, help="--runtimes: frames in the clip")
    parser.add_argument("--passes", type=int, default=3, help="--runtimes: timed passes over the clip, each side")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    use_cpu_threads(args.threads)  # torch's, ONNX Runtime's and OpenCV's
    torch.set_grad_enabled(False)
    if args.runtimes:
        compare_runtimes(args)
        return

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
    reference, detector = detector, inference_network(detector, args.runtime)
    det_ms = median_ms(lambda: detector(x), args.repeats)
    det_full_ms = median_ms(lambda: detect_faces(frame, detector, 0.5, 0.3), args.repeats)
    print(
        f"threads={args.threads}  frame={args.frame}x{args.frame}  repeats={args.repeats}  clock={args.clock}  "
        f"runtime={args.runtime}  torch {torch.__version__}"
    )
    print(f"{'network':<14}{'input':>7}{'params':>10}{'MMACs':>9}{'forward ms':>12}")
    print(
        f"{'blazeface':<14}{128:>7}{count_parameters(reference):>10,}{macs(reference, 128) / 1e6:>9.1f}{det_ms:>12.2f}"
    )
    rows = []
    box = torch.tensor([[0.3, 0.3, 0.7, 0.7]]) * args.frame
    kp = torch.zeros(1, 6, 2)
    kp[0, 0], kp[0, 1] = (
        box[0, :2] + torch.tensor([0.1, 0.15]) * args.frame,
        box[0, :2] + torch.tensor([0.3, 0.15]) * args.frame,
    )
    for name, reference in meshes.items():
        size, mesh = reference.input_size, inference_network(reference, args.runtime)
        xm = torch.rand(1, 3, size, size)
        mesh_ms = median_ms(lambda m=mesh, x=xm: m(x), args.repeats)
        pipe = FaceMeshPipeline(detector, mesh, size)
        crop_ms = median_ms(lambda p=pipe: p.mesh_on_crops(frame, box, kp), args.repeats)
        params, mmacs = count_parameters(reference), macs(reference, size) / 1e6
        print(f"{'mesh ' + name:<14}{size:>7}{params:>10,}{mmacs:>9.1f}{mesh_ms:>12.2f}")
        rows.append((name, crop_ms, 1000 / (det_full_ms + crop_ms), 1000 / crop_ms))
    print(f"\ndetector incl. letterbox + decode + weighted NMS on the frame: {det_full_ms:.2f} ms")
    print(f"{'variant':<14}{'mesh+crop ms':>13}{'fps detect+mesh':>17}{'fps tracking':>14}")
    for name, crop_ms, fps_both, fps_track in rows:
        print(f"{name:<14}{crop_ms:>13.2f}{fps_both:>17.1f}{fps_track:>14.1f}")


if __name__ == "__main__":
    main()
