"""Kaggle submission files of the Open Images Challenge 2019 (standard library + numpy only).

Detection track: header ``ImageId,PredictionString``; one row per image; the prediction string is
space-separated groups ``label conf xmin ymin xmax ymax`` (class MID, score, normalized box); an empty
string means no detection."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from core.data import DataFormatError, csv_header, csv_rows
from tasks.openimages.protocol import ImageDetections

DETECTION_HEADER = ["ImageId", "PredictionString"]


def format_detections(labels: Iterable[str], scores: Iterable[float], boxes: np.ndarray) -> str:
    """One image's prediction string (boxes: (n, 4) normalized x1, y1, x2, y2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    parts = []
    for label, score, (x1, y1, x2, y2) in zip(labels, scores, boxes):
        parts.append(f"{label} {float(score):.6g} {x1:.6f} {y1:.6f} {x2:.6f} {y2:.6f}")
    return " ".join(parts)


def detection_csv_text(predictions: Mapping[str, tuple[Iterable[str], Iterable[float], np.ndarray]]) -> str:
    """The detection submission as text: ``{image id: (labels, scores, boxes)}``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(DETECTION_HEADER)
    for image_id, (labels, scores, boxes) in predictions.items():
        writer.writerow([image_id, format_detections(labels, scores, boxes)])
    return out.getvalue()


def write_detection_submission(path: str | Path, predictions) -> Path:
    """Write the detection submission atomically (core.io); returns the path."""
    from core.io import atomic_write_text

    atomic_write_text(path, detection_csv_text(predictions))
    return Path(path)


def read_detection_submission(path: str | Path, class_ids: Mapping[str, int]) -> dict[str, ImageDetections]:
    """``{ImageId: ImageDetections}`` from a detection submission. A row that repeats an image, a
    group that is not 6 fields, a non-numeric value or an unknown class names the line."""
    path = Path(path)
    rows = csv_rows(path)
    csv_header(path, rows, DETECTION_HEADER, exact=True)
    out: dict[str, ImageDetections] = {}
    for line, row in rows:
        if len(row) != 2:
            raise DataFormatError(path, f"{len(row)} fields; expected ImageId,PredictionString", line)
        image_id, text = row
        if image_id in out:
            raise DataFormatError(path, f"image {image_id!r} appears twice", line)
        fields = text.split()
        if len(fields) % 6:
            raise DataFormatError(
                path, f"{len(fields)} values: groups of 6 (label conf xmin ymin xmax ymax) expected", line
            )
        names = fields[0::6]
        unknown = sorted({n for n in names if n not in class_ids})
        if unknown:
            raise DataFormatError(path, f"unknown class(es) {unknown[:5]}", line)
        try:
            values = np.array([f for i, f in enumerate(fields) if i % 6], dtype=np.float64).reshape(-1, 5)
        except ValueError:
            raise DataFormatError(path, "a score or coordinate is not a number", line) from None
        out[image_id] = ImageDetections(
            labels=np.array([class_ids[n] for n in names], dtype=np.int64),
            scores=values[:, 0],
            boxes=values[:, 1:5],
        )
    return out
