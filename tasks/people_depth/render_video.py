"""Render a clip with a trained people-depth checkpoint: input | predicted depth | synthetic defocus.

    python -m tasks.people_depth.render_video --checkpoint run/checkpoints/last.ckpt \\
        --root data/mannequin_challenge --split test [--clip <name>] --out bokeh.mp4
    python -m tasks.people_depth.render_video --checkpoint <ckpt> --video walk.mp4 [--masks <folder>] --out bokeh.mp4

With ``--video`` the human masks come from ``--masks`` (``<frame index>.png``) or, without it, from the
person segmenter (``--segmenter``, imported by tasks/people_depth/import_segmenter.py). The tool is then a
thin wrapper over predict.py's product writer (tasks/people_depth/predict.py, run by
core.prediction.predict_files): the same video reader, masks, checkpoint reader and error messages, and
beside ``--out`` the same products as ``python predict.py task=people_depth`` (``<out stem>/depth.mp4``,
``defocus.mp4``, ``depth/<frame index>.npy``, and ``masks/`` when the segmenter made them).

With ``--root`` the clip is read by the data set's own reader (datamodules/mannequin_challenge.py, with its
poses, masks and keypoints), as the video a test run writes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from core.checkpoint import load_task
from core.prediction import predict_files
from datamodules.mannequin_challenge import MannequinChallengeClips
from datamodules.predict_inputs import VideoInputs
from tasks.people_depth.module import PeopleDepthTask
from tasks.people_depth.predict import PeopleDepthProduct
from tasks.people_depth.segmenter import default_segmenter_path
from tasks.people_depth.video import render_clip_video


def render_user_video(task: PeopleDepthTask, video: str, out: Path, writer: PeopleDepthProduct) -> Path:
    """predict.py's steps on one video: its side-by-side video to ``out``, its products in ``<out stem>/``."""
    writer.side_by_side = True
    writer.side_by_side_dir = "."  # <out.parent>/<out.stem>.mp4, not inside the video's folder
    inputs = VideoInputs(video)  # predict.py's input finding and reader: a missing file is its error
    (record,) = predict_files(task, writer, [(inputs.paths[0], out.stem)], inputs.read, out.parent)
    return out.parent / record["side_by_side"]


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
    parser.add_argument("--aperture", type=float, default=None, help="default: the task's video_aperture (6)")
    parser.add_argument("--max-radius", type=float, default=8.0)
    parser.add_argument("--fps", type=float, default=None, help="default: the video's, or the task's video_fps")
    parser.add_argument("--out", required=True, help="output .mp4")
    args = parser.parse_args(argv)

    task = load_task(args.checkpoint, PeopleDepthTask)
    effect = {"focus_depth": args.focus_depth, "aperture": args.aperture, "max_radius": args.max_radius}
    if args.video is not None:
        writer = PeopleDepthProduct(
            masks=args.masks,
            segmenter=args.segmenter,
            max_frames=args.max_frames,
            fps=args.fps,
            image_size=args.image_size,
            **effect,
        )
        print(render_user_video(task, args.video, Path(args.out), writer))
        return
    size = args.image_size or task.hparams.image_size
    dataset = MannequinChallengeClips(
        Path(args.root) / args.split, image_size=size, keypoints=task.hparams.inputs == "IDCMK"
    )
    names = [t.name for t in dataset.trajectories]
    if args.clip is not None and args.clip not in names:
        raise SystemExit(f"clip {args.clip!r} not in {Path(args.root) / args.split} (have {names[:5]}...)")
    clip = names.index(args.clip) if args.clip else 0
    print(render_clip_video(task, dataset, clip, args.out, fps=args.fps, **effect))


if __name__ == "__main__":
    main()
