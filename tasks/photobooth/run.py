"""Photobooth on a video or a folder of frames: decide when to take the picture and save the shots.

    python -m tasks.photobooth.run clip.mp4 --checkpoint <PhotoboothTask .ckpt> --boxes clip.json
    python -m tasks.photobooth.run frames/ --checkpoint <...> --detector <face-mesh .ckpt>

Faces come from ``--boxes`` (per-frame boxes: the clips JSON of datamodules/photobooth.py, whose
clip for this video is picked by file name, or ``{"frames": [{"faces": [{"box": [x0, y0, x1,
y1]}]}]}``) or from the face-mesh system's detector (``--detector``). Writes into ``--output``:
``shots/shot_<n>_frame_<t>.jpg``, ``contact_sheet.png``, ``timeline.png`` (indicator and scores over
time), ``shots.json`` (each shot's frame, time and scores) and ``timeline.json`` (per-frame values)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from core.data import DataFormatError, read_json
from core.io import atomic_write_bytes, atomic_write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def read_input(path: Path) -> tuple[list[np.ndarray], float | None]:
    """All frames (RGB uint8) of a video (decord) or of a folder of images (name order), and the fps."""
    if path.is_dir():
        from datamodules.photobooth import read_image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return [read_image(f) for f in files], None
    from core.video import open_video, read_frames

    reader = open_video(path)
    return list(read_frames(reader, range(len(reader)), path)), float(reader.get_avg_fps())


def read_boxes(path: Path, video: Path, num_frames: int) -> list[np.ndarray]:
    """Per-frame (N, 4) boxes from a clips JSON (the clip named like ``video``) or a frames JSON."""
    data = read_json(path, "face boxes JSON")
    frames = data.get("frames") if isinstance(data, dict) else None
    if isinstance(data, dict) and "clips" in data:
        matches = [c for c in data["clips"] if Path(str(c.get("video", ""))).name == video.name]
        if not matches:
            raise DataFormatError(path, f"no clip with video named {video.name!r}")
        frames = matches[0].get("frames")
    if not isinstance(frames, list):
        raise DataFormatError(path, 'expected {"frames": [...]} or {"clips": [...]}')
    if len(frames) != num_frames:
        raise DataFormatError(path, f"boxes for {len(frames)} frames, but {video} has {num_frames}")
    out = []
    for t, frame in enumerate(frames):
        try:
            out.append(np.asarray([f["box"] for f in frame.get("faces", [])], np.float32).reshape(-1, 4))
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataFormatError(path, f"frame {t}: faces must be a list of {{'box': [x0, y0, x1, y1]}}") from None
    return out


def detector_boxes(checkpoint: str):
    """Boxes from the face-mesh system's detector (imported only when a checkpoint is given)."""
    from tasks.facemesh.detector import FaceDetector

    detector = FaceDetector.from_checkpoint(checkpoint)

    def boxes(frames: list[np.ndarray]) -> list[np.ndarray]:
        return [b.cpu().numpy().reshape(-1, 4) for b, _, _ in detector.detect_faces(np.stack(frames))]

    return boxes


def contact_sheet(frames: list[np.ndarray], shots: list[dict], columns: int = 4, width: int = 320) -> np.ndarray:
    """The shots side by side, each captioned with its frame and score."""
    from PIL import Image, ImageDraw

    if not shots:
        sheet = Image.new("RGB", (width, 40), (30, 30, 30))
        ImageDraw.Draw(sheet).text((8, 12), "no shots", fill=(255, 255, 255))
        return np.asarray(sheet)
    h0, w0 = frames[0].shape[:2]
    height = round(h0 * width / w0)
    rows = -(-len(shots) // columns)
    sheet = Image.new("RGB", (min(columns, len(shots)) * width, rows * (height + 18)), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    for i, shot in enumerate(shots):
        x, y = (i % columns) * width, (i // columns) * (height + 18)
        sheet.paste(Image.fromarray(frames[shot["frame"]]).resize((width, height)), (x, y))
        draw.text((x + 4, y + height + 3), f"frame {shot['frame']}  score {shot['score']:.2f}", fill=(255, 255, 255))
    return np.asarray(sheet)


def timeline_plot(result, fps: float) -> bytes:
    """Indicator, frame score, expression and kiss scores over time, shots marked; PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(result.score)) / fps
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    top.plot(t, result.indicator, color="tab:green", label="indicator")
    for edge in (0.25, 0.5, 0.75):
        top.axhline(edge, color="grey", lw=0.5, ls=":")
    top.set_ylim(0, 1)
    top.set_ylabel("indicator")
    top.set_yticks([0.125, 0.375, 0.625, 0.875], ["no faces", "not attending", "no expression", "key expression"])
    bottom.plot(t, result.raw_score, color="tab:grey", lw=0.8, label="frame score (before filter)")
    bottom.plot(t, result.score, color="tab:blue", label="frame score")
    bottom.plot(t, result.expression, color="tab:orange", lw=0.8, label="global expression")
    bottom.plot(t, result.kiss, color="tab:red", lw=0.8, label="kiss")
    for s in result.shots:
        bottom.axvline(s / fps, color="black", lw=1)
    bottom.set_xlabel("time (s)")
    bottom.set_ylim(0, 1)
    bottom.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def encode_jpeg(frame: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", type=Path, help="a video file or a folder of frames")
    parser.add_argument("--checkpoint", required=True, help="a PhotoboothTask checkpoint")
    faces = parser.add_mutually_exclusive_group(required=True)
    faces.add_argument("--boxes", type=Path, help="per-frame face boxes (JSON)")
    faces.add_argument("--detector", help="a face-mesh checkpoint whose detector finds the faces")
    parser.add_argument("--output", type=Path, default=None, help="output folder (default: <input>_photobooth)")
    parser.add_argument("--fps", type=float, default=None, help="frame rate of a folder of frames (default 10)")
    parser.add_argument("--no-attention", action="store_true", help="mean over faces instead of the attention model")
    parser.add_argument("--no-buffer", action="store_true", help="shutter without the look-ahead buffer")
    args = parser.parse_args(argv)

    from tasks.photobooth.pipeline import Photobooth

    frames, fps = read_input(args.input)
    fps = args.fps or fps or 10.0
    boxes = read_boxes(args.boxes, args.input, len(frames)) if args.boxes else detector_boxes(args.detector)
    booth = Photobooth.from_checkpoint(args.checkpoint, attention=not args.no_attention, buffer=not args.no_buffer)
    result = booth.run(frames, boxes)
    out = args.output or args.input.with_name(args.input.stem + "_photobooth")
    summary = write_products(out, frames, result, fps, str(args.input))
    print(f"{len(summary['shots'])} shots of {len(frames)} frames -> {out}")
    return summary


def write_products(out: Path, frames: list[np.ndarray], result, fps: float, source: str) -> dict:
    """Shots (JPEG), contact sheet, timeline plot and the JSON files of one input under ``out``;
    returns the content of shots.json. The run command and predict.py both write through it."""
    from PIL import Image

    shots = result.shot_records()
    for n, shot in enumerate(shots):
        shot["time_s"] = shot["frame"] / fps
        shot["file"] = f"shots/shot_{n:03d}_frame_{shot['frame']:06d}.jpg"
        atomic_write_bytes(out / shot["file"], encode_jpeg(frames[shot["frame"]]))
    sheet = io.BytesIO()
    Image.fromarray(contact_sheet(frames, shots)).save(sheet, format="PNG")
    atomic_write_bytes(out / "contact_sheet.png", sheet.getvalue())
    atomic_write_bytes(out / "timeline.png", timeline_plot(result, fps))
    summary = {"input": source, "fps": fps, "num_frames": len(frames), "shots": shots}
    atomic_write_json(out / "shots.json", summary)
    atomic_write_json(
        out / "timeline.json",
        {
            "score": result.score.round(5).tolist(),
            "raw_score": result.raw_score.round(5).tolist(),
            "expression": result.expression.round(5).tolist(),
            "kiss": result.kiss.round(5).tolist(),
            "indicator": result.indicator.round(5).tolist(),
            "num_faces": result.num_faces.tolist(),
            "rejected": {k: np.flatnonzero(v).tolist() for k, v in result.rejected.items()},
        },
    )
    return summary


if __name__ == "__main__":
    main()
