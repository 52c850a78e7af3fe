"""Render a clip with a trained people-depth checkpoint: input | predicted depth | synthetic defocus.

    python -m tasks.people_depth.render_video --checkpoint run/checkpoints/last.ckpt \\
        --root data/mannequin_challenge --split test [--clip <name>] --out bokeh.mp4
    python -m tasks.people_depth.render_video --checkpoint <ckpt> --video walk.mp4 [--masks <folder>] --out bokeh.mp4

With ``--video`` the human masks come from ``--masks`` (``<frame index>.png``) or, without it, from the
person segmenter (``--segmenter``, imported by tasks/people_depth/import_segmenter.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.checkpoint import load_task
from datamodules.mannequin_challenge import MannequinChallengeClips
from tasks.people_depth.module import PeopleDepthTask
from tasks.people_depth.segmenter import default_segmenter_path
from tasks.people_depth.video import render_clip_video, render_user_video


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Defocus a clip with depth from a trained people-depth model.")
    parser.add_argument("--checkpoint", required=True, help="a PeopleDepthTask checkpoint (.ckpt)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", help="Mannequin Challenge layout root")
    source.add_argument("--video", help="a video of your own (no poses: the single-frame variant)")
    parser.add_argument("--masks", default=None, help="--video: a folder of human masks <frame index>.png")
    parser.add_argument(
        "--segmenter",
        default=str(default_segmenter_path()),
        help="--video without --masks: the imported person segmenter (default: %(default)s)",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="--video: at most this many frames")
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
    parser.add_argument("--fps", type=float, default=None, help="default: the video's, or the task's video_fps")
    parser.add_argument("--out", required=True, help="output .mp4")
    args = parser.parse_args(argv)

    task = load_task(args.checkpoint, PeopleDepthTask)
    effect = {
        "focus_depth": args.focus_depth,
        "aperture": args.aperture,
        "max_radius": args.max_radius,
        "fps": args.fps,
    }
    if args.video is not None:
        out = render_user_video(
            task, args.video, args.out, args.masks, args.segmenter, args.image_size, args.max_frames, **effect
        )
        print(out)
        return
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
        **effect,
    )
    print(out)


if __name__ == "__main__":
    main()
