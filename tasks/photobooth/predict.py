"""Photobooth on a user's videos (predict.py): per video, under ``<video name>/``, the same products
as ``python -m tasks.photobooth.run``: shots (JPEG), contact sheet, timeline plot, shots.json and
timeline.json (``write_products``; ``python -m tasks.photobooth.run`` is a thin wrapper over this writer).

Faces (``product.writer``): ``boxes``, a JSON of per-frame boxes (the clips JSON of
datamodules/photobooth.py, whose clip for a video is picked by file name, or a folder holding
``<video name>.json`` in the ``{"frames": [{"faces": [{"box": ...}]}]}`` form), or ``detector``, a
face-mesh checkpoint whose face detector finds them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.checkpoint import CheckpointError, load_stamped_task
from core.data import DataFormatError, read_json
from core.images import IMAGE_SUFFIXES
from core.io import atomic_write_bytes, atomic_write_json
from core.prediction import ProductWriter

FRAME_KEYS = ("frame", "crops", "boxes", "mask", "blur")


def read_input(path: Path) -> tuple[list[np.ndarray], float | None]:
    """All frames (RGB uint8) of a video (decord) or of a folder of images (found as predict.py finds inputs,
    in name order), and the fps."""
    if path.is_dir():
        from datamodules.photobooth import read_image
        from datamodules.predict_inputs import list_inputs

        return [read_image(f) for f in list_inputs(path, IMAGE_SUFFIXES)], None
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
    """Boxes from the face-mesh system's detector, taken as its checkpoint (trained, or MediaPipe's imported
    by ``make mediapipe-models``): the task the checkpoint names, which offers ``detect_faces``."""
    detector = load_stamped_task(checkpoint).eval()
    if not callable(getattr(detector, "detect_faces", None)):
        raise CheckpointError(checkpoint, f"{type(detector).__name__} has no face detector (detect_faces)")

    def boxes(frames: list[np.ndarray]) -> list[np.ndarray]:
        chunks = [detector.detect_faces(np.stack(frames[i : i + 16])) for i in range(0, len(frames), 16)]
        return [b.cpu().numpy().reshape(-1, 4) for chunk in chunks for b, _, _ in chunk]

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
    """The values the shutter decided on, under their names, over time; PNG bytes. Top: the indicator
    with its four ranges. Middle: the expression and kiss scores the frame score was computed from, the
    frame score before and after the quality filter, the shutter's threshold, shots as vertical lines.
    Bottom: the filter's smoothed inputs and the frames it rejected (shaded)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(result.score)) / fps
    fig, (top, middle, bottom) = plt.subplots(
        3, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [1, 1.6, 1]}
    )
    top.plot(t, result.indicator, color="tab:green", label="indicator")
    for edge in (0.25, 0.5, 0.75):
        top.axhline(edge, color="grey", lw=0.5, ls=":")
    top.set_ylim(0, 1)
    top.set_ylabel("indicator")
    top.set_yticks([0.125, 0.375, 0.625, 0.875], ["no faces", "not attending", "attending", "may shoot"])
    which = "smoothed" if result.smoothed_score else "frame's own"
    middle.plot(t, result.expression, color="tab:orange", lw=0.8, label=f"expression score ({which})")
    middle.plot(t, result.kiss, color="tab:red", lw=0.8, label=f"kiss score ({which})")
    middle.plot(t, result.raw_score, color="tab:grey", lw=0.8, ls="--", label="frame score before the filter")
    middle.plot(t, result.score, color="tab:blue", label="frame score (shutter input)")
    middle.axhline(result.threshold, color="black", lw=0.6, ls=":", label="shutter threshold")
    for s in result.shots:
        for axis in (top, middle, bottom):
            axis.axvline(s / fps, color="black", lw=1)
    middle.set_ylim(0, 1.02)
    middle.set_ylabel("scores")
    middle.legend(fontsize=7, loc="upper right")
    rejected = ~np.asarray(result.accepted, bool)
    bottom.fill_between(t, 0, 1, where=rejected, color="tab:red", alpha=0.12, step="mid", label="rejected")
    for key, colour in (("eyes_closed", "tab:purple"), ("talking", "tab:brown"), ("attending", "tab:green")):
        bottom.plot(t, result.smoothed[key], color=colour, lw=0.8, label=f"{key.replace('_', ' ')} (smoothed)")
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("filter")
    bottom.set_xlabel("time (s)")
    bottom.legend(fontsize=7, loc="upper right", ncol=4)
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


def write_products(out: Path, frames: list[np.ndarray], result, fps: float, source: str) -> dict:
    """Shots (JPEG), contact sheet, timeline plot and the JSON files of one input under ``out``;
    returns the content of shots.json. predict.py and the run command both write through it."""
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
            "threshold": result.threshold,
            "smoothed_score": result.smoothed_score,
            "accepted": result.accepted.tolist(),
            "smoothed": {k: np.asarray(v).round(5).tolist() for k, v in result.smoothed.items() if k != "blur"},
            "indicator": result.indicator.round(5).tolist(),
            "num_faces": result.num_faces.tolist(),
            "rejected": {k: np.flatnonzero(v).tolist() for k, v in result.rejected.items()},
        },
    )
    return summary


class PhotoboothProduct(ProductWriter):
    """Shots and their contact sheet, the indicator/score timeline and JSON per video."""

    input_kind = "videos"

    def __init__(
        self,
        boxes: str | None = None,
        detector: str | None = None,
        attention: bool = True,
        buffer: bool = True,
        fps: float | None = None,
    ) -> None:
        super().__init__()
        self.pipeline = {"attention": attention, "buffer": buffer}  # the Photobooth's options, for predict_step
        self.fps = fps
        if (boxes is None) == (detector is None):
            raise ValueError("give exactly one of product.writer.boxes (per-frame boxes) or product.writer.detector")
        self.boxes = Path(boxes) if boxes else None
        if self.boxes is not None and not self.boxes.exists():
            raise FileNotFoundError(f"product.writer.boxes={self.boxes}: no such file or folder")
        self.detector = detector
        self._detect = None
        self.crop_size, self.frame_size, self.max_faces = 48, (96, 160), 4

    def bind(self, task, checkpoint: dict[str, Any]) -> None:
        hp = task.hparams
        self.crop_size, self.frame_size, self.max_faces = int(hp.crop_size), tuple(hp.frame_size), int(hp.max_faces)

    def load_detector(self) -> None:
        """The detector checkpoint read (once): on first use, or up front by a command line."""
        if self._detect is None:
            self._detect = detector_boxes(self.detector)

    def prepare(self, path: Path) -> dict[str, Any]:
        from datamodules.photobooth import frame_inputs

        path = Path(path)
        frames, fps = read_input(path)
        if self.boxes is not None:
            source = self.boxes / f"{path.stem}.json" if self.boxes.is_dir() else self.boxes
            boxes = read_boxes(source, path, len(frames))
        else:
            self.load_detector()
            boxes = [b for s in range(0, len(frames), 16) for b in self._detect(frames[s : s + 16])]
        items = [frame_inputs(f, b, self.crop_size, self.frame_size, self.max_faces) for f, b in zip(frames, boxes)]
        sample = {k: torch.stack([it[k] for it in items]) for k in FRAME_KEYS}
        sample["frames_uint8"] = frames
        sample["fps"] = self.fps or fps or 10.0
        return sample

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Videos of a batch end to end along the frame axis; ``lengths`` splits them again."""
        batch = {k: torch.cat([s[k] for s in samples]) for k in FRAME_KEYS} if samples else {}
        batch["lengths"] = [len(s["frames_uint8"]) for s in samples]
        batch["frames_uint8"] = [s["frames_uint8"] for s in samples]
        batch["fps"] = [s["fps"] for s in samples]
        batch["pipeline"] = self.pipeline
        return batch

    def write_item(self, run_dir: Path, name: str, prediction: Any, batch: dict, index: int) -> dict:
        folder = Path(run_dir) / name
        summary = write_products(
            folder, batch["frames_uint8"][index], prediction, batch["fps"][index], batch["inputs"][index]
        )
        return {"folder": name, "frames": summary["num_frames"], "shots": [s["frame"] for s in summary["shots"]]}

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "videos": {
                r["input"]: {"folder": r["folder"], "frames": r["frames"], "shots": r["shots"]} for r in records
            },
            "files_per_video": ["shots/*.jpg", "contact_sheet.png", "timeline.png", "shots.json", "timeline.json"],
        }
