"""Photobooth on a user's videos (predict.py): per video, under ``<video name>/``, the same products
as ``python -m tasks.photobooth.run``: shots (JPEG), contact sheet, timeline plot, shots.json and
timeline.json (written by tasks.photobooth.run.write_products).

Faces (``product.writer``): ``boxes``, a JSON of per-frame boxes (the clips JSON of
datamodules/photobooth.py, whose clip for a video is picked by file name, or a folder holding
``<video name>.json`` in the ``{"frames": [{"faces": [{"box": ...}]}]}`` form), or ``detector``, a
face-mesh checkpoint whose face detector finds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.prediction import ProductWriter

FRAME_KEYS = ("frame", "crops", "boxes", "mask", "blur")


class PhotoboothProduct(ProductWriter):
    """Shots and their contact sheet, the indicator/score timeline and JSON per video."""

    input_kind = "videos"

    def __init__(self, boxes: str | None = None, detector: str | None = None) -> None:
        super().__init__()
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

    def prepare(self, path: Path) -> dict[str, Any]:
        from datamodules.photobooth import frame_inputs
        from tasks.photobooth.run import detector_boxes, read_boxes, read_input

        path = Path(path)
        frames, fps = read_input(path)
        if self.boxes is not None:
            source = self.boxes / f"{path.stem}.json" if self.boxes.is_dir() else self.boxes
            boxes = read_boxes(source, path, len(frames))
        else:
            if self._detect is None:
                self._detect = detector_boxes(self.detector)
            boxes = [b for s in range(0, len(frames), 16) for b in self._detect(frames[s : s + 16])]
        items = [frame_inputs(f, b, self.crop_size, self.frame_size, self.max_faces) for f, b in zip(frames, boxes)]
        sample = {k: torch.stack([it[k] for it in items]) for k in FRAME_KEYS}
        sample["frames_uint8"] = frames
        sample["fps"] = fps or 10.0
        return sample

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Videos of a batch end to end along the frame axis; ``lengths`` splits them again."""
        batch = {k: torch.cat([s[k] for s in samples]) for k in FRAME_KEYS} if samples else {}
        batch["lengths"] = [len(s["frames_uint8"]) for s in samples]
        batch["frames_uint8"] = [s["frames_uint8"] for s in samples]
        batch["fps"] = [s["fps"] for s in samples]
        return batch

    def write_item(self, run_dir: Path, name: str, prediction: Any, batch: dict, index: int) -> dict:
        from tasks.photobooth.run import write_products

        folder = Path(run_dir) / name
        summary = write_products(folder, batch["frames_uint8"][index], prediction, batch["fps"][index], name)
        return {"folder": name, "frames": summary["num_frames"], "shots": [s["frame"] for s in summary["shots"]]}

    def merge(self, run_dir: Path, records: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "videos": {
                r["input"]: {"folder": r["folder"], "frames": r["frames"], "shots": r["shots"]} for r in records
            },
            "files_per_video": ["shots/*.jpg", "contact_sheet.png", "timeline.png", "shots.json", "timeline.json"],
        }
