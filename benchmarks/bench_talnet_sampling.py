"""Snippet-sampling throughput of decord against PyAV on the same generated video.

    python benchmarks/bench_talnet_sampling.py [--seconds 60] [--fps 30] [--size 128]

Decodes (a) every frame in order and (b) the frames TALNet's extraction needs (resampled to
10 fps, 5-frame snippets every 2 frames), and prints frames per second for each reader."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from core.video import write_video
from datamodules.synthetic.thumos14 import _render_video
from datamodules.thumos14_extract import resampled_frame_indices, sample_snippets


def decord_all(path: Path) -> int:
    from core.video import open_video, read_frames

    reader = open_video(path)
    n = 0
    for lo in range(0, len(reader), 256):
        n += len(read_frames(reader, list(range(lo, min(lo + 256, len(reader)))), path))
    return n


def pyav_all(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for frame in container.decode(video=0) if frame.to_ndarray(format="rgb24") is not None)


def decord_snippets(path: Path) -> int:
    return sum(len(frames) for _, frames in sample_snippets(path, 10.0, 2, 5))


def pyav_snippets(path: Path, source_fps: float, total: int) -> int:
    """PyAV cannot seek frame-exactly cheaply: decode in order and keep the wanted frames."""
    import av

    wanted = set(resampled_frame_indices(total, source_fps, 10.0).tolist())
    n = 0
    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k in wanted:
                frame.to_ndarray(format="rgb24")
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = _render_video(rng, args.seconds, args.fps, args.size, [(0, 5.0, 20.0), (3, 30.0, 50.0)])
    with tempfile.TemporaryDirectory() as tmp:
        path = write_video(Path(tmp) / "video_test_0000001.mp4", frames, fps=args.fps)
        total = len(frames)
        print(
            f"video: {total} frames, {args.size}x{args.size}, {args.fps:g} fps, "
            f"{path.stat().st_size / 1e6:.2f} MB (H.264)"
        )
        cases = {
            "decord, every frame": lambda: decord_all(path),
            "PyAV,   every frame": lambda: pyav_all(path),
            "decord, snippets @10 fps": lambda: decord_snippets(path),
            "PyAV,   snippets @10 fps": lambda: pyav_snippets(path, args.fps, total),
        }
        for name, run in cases.items():
            best = np.inf
            for _ in range(args.repeats):
                t = time.perf_counter()
                n = run()
                best = min(best, time.perf_counter() - t)
            print(f"{name:28s} {n:6d} frames in {best:.3f} s = {n / best:8.1f} frames/s")


if __name__ == "__main__":
    main()
