"""Kaggle submission files of the Open Images Challenge 2019 (standard library, numpy, pycocotools).

Detection track: header ``ImageId,PredictionString``; one row per image; the prediction string is
space-separated groups ``label conf xmin ymin xmax ymax`` (class MID, score, normalized box); an empty
string means no detection.

Instance-segmentation track: header ``ImageID,ImageWidth,ImageHeight,PredictionString``; groups
``label conf mask``, the mask being the COCO RLE (pycocotools) of the full-resolution binary mask,
zlib-compressed and base64-encoded (the challenge's encoding, which its evaluator decodes with
``coco_mask.decode({"size": [height, width], "counts": zlib.decompress(b64decode(text))})``)."""

from __future__ import annotations

import base64
import csv
import io
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import DataFormatError, csv_header, csv_rows
from tasks.openimages.protocol import ImageDetections

DETECTION_HEADER = ["ImageId", "PredictionString"]
SEGMENTATION_HEADER = ["ImageID", "ImageWidth", "ImageHeight", "PredictionString"]


def prediction_rows(path: Path, header: list[str], group: str) -> Iterator[tuple[int, list[str], np.ndarray]]:
    """``(line, the row's leading fields, groups (k, len(group.split())) str)`` per row of a Kaggle
    submission whose last column is a space-separated prediction string; the header must be exactly
    ``header``. A wrong field count, a repeated image or a string that is not whole groups of ``group``
    (e.g. "label conf xmin ymin xmax ymax") raises DataFormatError naming the line."""
    size = len(group.split())
    rows = csv_rows(path)
    csv_header(path, rows, header, exact=True)
    seen: set[str] = set()
    for line, row in rows:
        if len(row) != len(header):
            raise DataFormatError(path, f"{len(row)} fields; expected {','.join(header)}", line)
        if row[0] in seen:
            raise DataFormatError(path, f"image {row[0]!r} appears twice", line)
        seen.add(row[0])
        fields = row[-1].split()
        if len(fields) % size:
            raise DataFormatError(path, f"{len(fields)} values: groups of {size} ({group}) expected", line)
        yield line, row[:-1], np.array(fields, dtype=str).reshape(-1, size)


def class_ids_of(path: Path, line: int, names: Iterable[str], class_ids: Mapping[str, int]) -> np.ndarray:
    """The ids of ``names``; an unknown class raises DataFormatError naming the line."""
    names = list(names)
    unknown = sorted({n for n in names if n not in class_ids})
    if unknown:
        raise DataFormatError(path, f"unknown class(es) {unknown[:5]}", line)
    return np.array([class_ids[n] for n in names], dtype=np.int64)


def format_detections(labels: Iterable[str], scores: Iterable[float], boxes: np.ndarray) -> str:
    """One image's prediction string (boxes: (n, 4) normalized x1, y1, x2, y2). Scores keep 9
    significant digits, which a float32 score round-trips exactly: fewer merge distinct scores into
    ties and change the ranking, hence the AP (seen at 6 digits on a near-untrained model)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    parts = []
    for label, score, (x1, y1, x2, y2) in zip(labels, scores, boxes):
        parts.append(f"{label} {float(score):.9g} {x1:.6f} {y1:.6f} {x2:.6f} {y2:.6f}")
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
    out: dict[str, ImageDetections] = {}
    for line, (image_id,), groups in prediction_rows(path, DETECTION_HEADER, "label conf xmin ymin xmax ymax"):
        labels = class_ids_of(path, line, groups[:, 0], class_ids)
        try:
            values = groups[:, 1:].astype(np.float64)
        except ValueError:
            raise DataFormatError(path, "a score or coordinate is not a number", line) from None
        out[image_id] = ImageDetections(labels=labels, scores=values[:, 0], boxes=values[:, 1:5])
    return out


def encode_mask(mask: np.ndarray) -> str:
    """A bool (H, W) mask as challenge text: COCO RLE counts, zlib (best compression), base64."""
    from pycocotools import mask as coco_mask

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a mask is (height, width); got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)[:, :, None]))[0]
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """The bool (height, width) mask of a challenge mask text (inverse of :func:`encode_mask`)."""
    from pycocotools import mask as coco_mask

    counts = zlib.decompress(base64.b64decode(text, validate=True))
    return coco_mask.decode({"size": [int(height), int(width)], "counts": counts}).astype(bool)


def segmentation_csv_text(predictions: Mapping[str, tuple]) -> str:
    """The segmentation submission as text: ``{image id: (width, height, labels, scores, masks)}``,
    masks (n, height, width) bool at the image's full resolution."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SEGMENTATION_HEADER)
    for image_id, (width, height, labels, scores, masks) in predictions.items():
        masks = np.asarray(masks, dtype=bool).reshape(-1, int(height), int(width))
        groups = [f"{label} {float(score):.9g} {encode_mask(m)}" for label, score, m in zip(labels, scores, masks)]
        writer.writerow([image_id, int(width), int(height), " ".join(groups)])
    return out.getvalue()


def write_segmentation_submission(path: str | Path, predictions: Mapping[str, tuple]) -> Path:
    """Write the segmentation submission atomically (core.io); returns the path."""
    from core.io import atomic_write_text

    atomic_write_text(path, segmentation_csv_text(predictions))
    return Path(path)


@dataclass
class SegmentationRow:
    """One image of a segmentation submission, masks still encoded (decoded per image when scored)."""

    width: int
    height: int
    labels: np.ndarray
    scores: np.ndarray
    masks: list[str]

    def decode(self) -> np.ndarray:
        """(n, height, width) bool masks."""
        out = np.zeros((len(self.masks), self.height, self.width), dtype=bool)
        for i, text in enumerate(self.masks):
            out[i] = decode_mask(text, self.height, self.width)
        return out


def read_segmentation_submission(path: str | Path, class_ids: Mapping[str, int]) -> dict[str, SegmentationRow]:
    """``{ImageID: SegmentationRow}`` from a segmentation submission; a repeated image, a group that is
    not 3 fields, a bad size or score or an unknown class names the line. Masks are checked when
    decoded (:meth:`SegmentationRow.decode`)."""
    path = Path(path)
    out: dict[str, SegmentationRow] = {}
    for line, (image_id, width, height), groups in prediction_rows(path, SEGMENTATION_HEADER, "label conf mask"):
        try:
            width, height = int(width), int(height)
        except ValueError:
            size = f"{width!r} x {height!r}"
            raise DataFormatError(path, f"ImageWidth / ImageHeight {size} are not integers", line) from None
        if width <= 0 or height <= 0:
            raise DataFormatError(path, f"image size {width} x {height} is not positive", line)
        labels = class_ids_of(path, line, groups[:, 0], class_ids)
        try:
            scores = groups[:, 1].astype(np.float64)
        except ValueError:
            raise DataFormatError(path, "a score is not a number", line) from None
        out[image_id] = SegmentationRow(width, height, labels, scores, groups[:, 2].tolist())
    return out
