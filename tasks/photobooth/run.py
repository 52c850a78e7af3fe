"""Photobooth on a video or a folder of frames: decide when to take the picture and save the shots.

    python -m tasks.photobooth.run clip.mp4 --checkpoint <PhotoboothTask .ckpt> --boxes clip.json
    python -m tasks.photobooth.run frames/ --checkpoint <...> --detector <face-mesh .ckpt>

Faces come from ``--boxes`` (per-frame boxes: the clips JSON of datamodules/photobooth.py, whose
clip for this video is picked by file name, or ``{"frames": [{"faces": [{"box": [x0, y0, x1,
y1]}]}]}``) or from the face-mesh system's detector (``--detector``). Writes into ``--output``:
``shots/shot_<n>_frame_<t>.jpg``, ``contact_sheet.png``, ``timeline.png`` (indicator, the scores the
shutter used and the filter's inputs over time), ``shots.json`` (each shot's frame, time and scores)
and ``timeline.json`` (per-frame values).

A thin wrapper over predict.py's product writer (tasks/photobooth/predict.py, run by
core.prediction.predict_files): the same readers, boxes, checkpoint reader, products and error messages
(``python predict.py task=photobooth`` writes them for many videos, with resume)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.checkpoint import load_task
from core.prediction import predict_files
from tasks.photobooth.module import PhotoboothTask
from tasks.photobooth.predict import PhotoboothProduct


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="a video file or a folder of frames")
    parser.add_argument("--checkpoint", required=True, help="a PhotoboothTask checkpoint")
    faces = parser.add_mutually_exclusive_group(required=True)
    faces.add_argument("--boxes", help="per-frame face boxes (JSON)")
    faces.add_argument("--detector", help="a face-mesh checkpoint whose detector finds the faces")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: <input>_photobooth)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default 10)")
    parser.add_argument("--no-attention", action="store_true", help="mean over faces instead of the attention model")
    parser.add_argument("--no-buffer", action="store_true", help="shutter without the look-ahead buffer")
    args = parser.parse_args(argv)

    writer = PhotoboothProduct(
        boxes=args.boxes,
        detector=args.detector,
        attention=not args.no_attention,
        buffer=not args.no_buffer,
        fps=args.fps,
    )
    if args.detector:
        writer.load_detector()  # read first: a bad detector checkpoint is the error, whatever --checkpoint is
    task = load_task(args.checkpoint, PhotoboothTask)
    out = args.output or args.input.with_name(args.input.stem + "_photobooth")
    # the writer reads the video, or the folder of frames, itself (prepare); products go to <out.parent>/<out.name>
    (record,) = predict_files(task, writer, [(args.input, out.name)], Path, out.parent)
    summary = json.loads((out / "shots.json").read_text())
    print(f"{len(record['shots'])} shots of {record['frames']} frames -> {out}")
    return summary


if __name__ == "__main__":
    main()
