"""Render a clip with a trained people-depth checkpoint: input | predicted depth | synthetic defocus.

    python -m tasks.people_depth.render_video --checkpoint run/checkpoints/last.ckpt \\
        --root data/mannequin_challenge --split test [--clip <name>] --out bokeh.mp4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.checkpoint import load_task
from datamodules.mannequin_challenge import MannequinChallengeClips
from tasks.people_depth.module import PeopleDepthTask
from tasks.people_depth.video import render_clip_video


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Defocus a clip with depth from a trained people-depth model.")
    parser.add_argument("--checkpoint", required=True, help="a PeopleDepthTask checkpoint (.ckpt)")
    parser.add_argument("--root", required=True, help="Mannequin Challenge layout root")
    parser.add_argument("--split", default="test")
    parser.add_argument("--clip", default=None, help="clip name (the .txt stem); default: the first")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="default: the size the model was trained at",
    )
    parser.add_argument("--focus-depth", type=float, default=None, help="default: on the people")
    parser.add_argument("--aperture", type=float, default=6.0)
    parser.add_argument("--max-radius", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--out", required=True, help="output .mp4")
    args = parser.parse_args(argv)

    task = load_task(args.checkpoint, PeopleDepthTask)
    size = args.image_size or task.hparams.image_size
    dataset = MannequinChallengeClips(
        Path(args.root) / args.split, image_size=size, keypoints=task.hparams.inputs == "IDCMK"
    )
    names = [t.name for t in dataset.trajectories]
    if args.clip is not None and args.clip not in names:
        raise SystemExit(f"clip {args.clip!r} not in {Path(args.root) / args.split} (have {names[:5]}...)")
    clip = names.index(args.clip) if args.clip else 0
    out = render_clip_video(
        task,
        dataset,
        clip,
        args.out,
        focus_depth=args.focus_depth,
        aperture=args.aperture,
        max_radius=args.max_radius,
        fps=args.fps,
    )
    print(out)


if __name__ == "__main__":
    main()
