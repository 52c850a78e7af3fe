"""Depth videos of a clip: input | predicted depth | synthetic defocus, from any depth predictor.

    python -m tasks.people_depth.video --checkpoint run/checkpoints/last.ckpt \\
        --root data/mannequin_challenge --split test [--clip <name>] --out bokeh.mp4

Kept out of the LightningModule: the module calls ``render_clip_video`` at the end of testing, and
this file imports the module only in its command-line entry point."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from core.media import log_video as _log_video
from tasks.people_depth.defocus import write_effect_video

VIDEO_NAME = "people_depth_side_by_side.mp4"
BATCH_KEYS = ("image", "human_mask", "input_log_depth", "confidence", "keypoints")


def render_clip_video(task, dataset, clip: int, path: str | Path, focus_depth: Optional[float] = None,
                      aperture: Optional[float] = None, max_radius: float = 8.0, fps: Optional[float] = None,
                      max_frames: Optional[int] = None) -> Path:
    """Predict depth with ``task.predict_depth`` for the frames of ``clip`` in ``dataset`` and write
    input | depth | defocus (focused on the people) to ``path``."""
    indices = [i for i, s in enumerate(dataset.samples) if s.clip == clip][: max_frames or None]
    if not indices:
        raise ValueError(f"clip {clip} has no samples")
    device = next(task.parameters()).device
    images, depths, masks = [], [], []
    for start in range(0, len(indices), 8):
        items = [dataset[i] for i in indices[start:start + 8]]
        batch = {k: torch.stack([it[k] for it in items]).to(device) for k in BATCH_KEYS if k in items[0]}
        depth = task.predict_depth(batch).cpu().numpy()[:, 0]
        for it, d in zip(items, depth):
            images.append((it["image"].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
            depths.append(d)
            masks.append(it["human_mask"][0].numpy())
    hparams = getattr(task, "hparams", {})
    return write_effect_video(path, images, depths, masks, focus_depth=focus_depth,
                              aperture=aperture if aperture is not None else hparams.get("video_aperture", 6.0),
                              max_radius=max_radius, fps=fps or hparams.get("video_fps", 10.0))


def log_video(target, key: str, path: Path, fps: float = 10.0) -> None:
    """The rendered video to the run's experiment loggers (W&B, TensorBoard, CSV; core.media)."""
    _log_video(target, key, path, fps=fps)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Defocus a clip with depth from a trained people-depth model.")
    parser.add_argument("--checkpoint", required=True, help="a PeopleDepthTask checkpoint (.ckpt)")
    parser.add_argument("--root", required=True, help="Mannequin Challenge layout root")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clip", default=None, help="clip name (the .txt stem); default: the first")
    parser.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="default: the size the model was trained at")
    parser.add_argument("--focus-depth", type=float, default=None, help="default: on the people")
    parser.add_argument("--aperture", type=float, default=6.0)
    parser.add_argument("--max-radius", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--out", required=True, help="output .mp4")
    args = parser.parse_args(argv)

    from datamodules.mannequin_challenge import MannequinChallengeClips
    from tasks.people_depth.module import PeopleDepthTask

    task = PeopleDepthTask.load_from_checkpoint(args.checkpoint, map_location="cpu")
    size = args.image_size or task.hparams.image_size
    dataset = MannequinChallengeClips(Path(args.root) / args.split, image_size=size,
                                      keypoints=task.hparams.inputs == "IDCMK")
    names = [t.name for t in dataset.trajectories]
    if args.clip is not None and args.clip not in names:
        raise SystemExit(f"clip {args.clip!r} not in {Path(args.root) / args.split} (have {names[:5]}...)")
    clip = names.index(args.clip) if args.clip else 0
    out = render_clip_video(task, dataset, clip, args.out, focus_depth=args.focus_depth,
                            aperture=args.aperture, max_radius=args.max_radius, fps=args.fps)
    print(out)


if __name__ == "__main__":
    main()
