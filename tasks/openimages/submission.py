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
import binascii
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
# A detection box is normalized; one that leaves the image by more than this is not a slightly loose
# box but another unit (pixels) or garbage, which would silently score 0: refused.
BOX_MARGIN = 0.5
# The largest image a segmentation submission may declare: PIL's decompression-bomb limit, which no
# image the project decodes exceeds. Masks are decoded at the declared size, so this bounds memory.
MAX_IMAGE_PIXELS = 89_478_485


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


def check_scores(path: Path, line: int, scores: np.ndarray, texts: np.ndarray) -> None:
    """Scores must be finite: a NaN or infinite score has no rank, and would give a number anyway."""
    bad = ~np.isfinite(scores)
    if bad.any():
        raise DataFormatError(path, f"score {str(texts[np.flatnonzero(bad)[0]])!r} is not a finite number", line)


def check_detection_boxes(path: Path, line: int, boxes: np.ndarray) -> None:
    """Normalized ``xmin ymin xmax ymax`` boxes: finite, min <= max (an empty box is dropped when
    scored, as officially; a reversed one is an error) and within ``BOX_MARGIN`` of [0, 1]."""
    for name, bad in (
        ("is not finite", ~np.isfinite(boxes).all(axis=1)),
        ("is reversed (xmin > xmax or ymin > ymax)", (boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])),
        (
            f"leaves the image by more than {BOX_MARGIN} (normalized coordinates in [0, 1] expected)",
            ((boxes < -BOX_MARGIN) | (boxes > 1 + BOX_MARGIN)).any(axis=1),
        ),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(path, f"box {i + 1} ({' '.join(f'{v:g}' for v in boxes[i])}) {name}", line)


def read_detection_submission(path: str | Path, class_ids: Mapping[str, int]) -> dict[str, ImageDetections]:
    """``{ImageId: ImageDetections}`` from a detection submission. A row that repeats an image, a
    group that is not 6 fields, a non-numeric value, a non-finite score, a bad box
    (:func:`check_detection_boxes`) or an unknown class names the line."""
    path = Path(path)
    out: dict[str, ImageDetections] = {}
    for line, (image_id,), groups in prediction_rows(path, DETECTION_HEADER, "label conf xmin ymin xmax ymax"):
        labels = class_ids_of(path, line, groups[:, 0], class_ids)
        try:
            values = groups[:, 1:].astype(np.float64)
        except ValueError:
            raise DataFormatError(path, "a score or coordinate is not a number", line) from None
        check_scores(path, line, values[:, 0], groups[:, 1])
        check_detection_boxes(path, line, values[:, 1:5])
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


def rle_runs(counts: bytes) -> np.ndarray:
    """The run lengths of a COCO compressed-RLE string (maskApi's ``rleFrString`` format: each run
    is 5-bit groups as characters from '0', least significant first, 0x20 = more groups follow,
    0x10 in the last group = negative; from the fourth run on, a run is stored as its difference to
    the run two before). Raises ValueError for bytes outside that alphabet or a cut-off run."""
    digits = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if len(digits) == 0:
        return np.zeros(0, dtype=np.int64)
    if ((digits < 0) | (digits > 63)).any():
        raise ValueError("RLE counts hold characters outside the COCO alphabet")
    last = (digits & 0x20) == 0
    if not last[-1]:
        raise ValueError("RLE counts end inside a run")
    run = np.concatenate([[0], np.cumsum(last)[:-1]])  # which run each character belongs to
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    position = np.arange(len(digits)) - starts[run]  # 5-bit group index within its run
    if position.max() > 12:
        raise ValueError("RLE counts hold a run longer than 60 bits")
    values = np.zeros(int(run[-1]) + 1, dtype=np.int64)
    np.add.at(values, run, (digits & 0x1F) << (5 * position))
    negative = (digits[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * (position[last][negative] + 1))
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # run m adds run m - 2 for m > 2: two chains, from 1 and from 2
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def mask_counts(text: str, height: int, width: int) -> bytes:
    """The RLE counts of a challenge mask text, checked before any pixel is decoded: valid base64,
    valid zlib, and runs that are non-negative and cover exactly ``height * width`` pixels (the C
    decoder writes as many pixels as the runs say). Raises ValueError saying which check failed."""
    try:
        packed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError(f"mask is not base64 ({err})") from None
    try:
        counts = zlib.decompress(packed)
    except zlib.error as err:
        raise ValueError(f"mask is not zlib-compressed RLE ({err})") from None
    runs = rle_runs(counts)
    if (runs < 0).any():
        raise ValueError("mask RLE has a negative run")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"mask RLE covers {int(runs.sum())} pixels, but the image is {width} x {height} = {height * width}"
        )
    return counts


def decode_mask(text: str, height: int, width: int) -> np.ndarray:
    """The bool (height, width) mask of a challenge mask text (inverse of :func:`encode_mask`);
    ValueError for a text :func:`mask_counts` refuses."""
    from pycocotools import mask as coco_mask

    counts = mask_counts(text, int(height), int(width))
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
    not 3 fields, a bad size or score (non-finite), a size over ``MAX_IMAGE_PIXELS``, a mask that is not
    base64 / zlib / RLE covering exactly the declared size (:func:`mask_counts`) or an unknown class
    names the line; no mask is decoded to pixels here."""
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
        if width * height > MAX_IMAGE_PIXELS:
            raise DataFormatError(
                path, f"image size {width} x {height} is over the limit of {MAX_IMAGE_PIXELS} pixels", line
            )
        labels = class_ids_of(path, line, groups[:, 0], class_ids)
        try:
            scores = groups[:, 1].astype(np.float64)
        except ValueError:
            raise DataFormatError(path, "a score is not a number", line) from None
        check_scores(path, line, scores, groups[:, 1])
        for k, text in enumerate(groups[:, 2]):
            try:
                mask_counts(text, height, width)
            except ValueError as err:
                raise DataFormatError(path, f"detection {k + 1}: {err}", line) from None
        out[image_id] = SegmentationRow(width, height, labels, scores, groups[:, 2].tolist())
    return out
