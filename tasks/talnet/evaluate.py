"""Score any ActivityNet-format detection results against THUMOS'14 annotations:

    python -m tasks.talnet.evaluate results.json --annotations <thumos14.json | annotation folder> \
        [--subset Test] [--ambiguous keep|drop] [--out metrics.json]

``--annotations`` is either the JSON database of the pre-extracted form (videos of ``--subset``)
or a folder of the official per-class files (``<Class>_test.txt`` ...; ``--suffix test``).
As in the official ActivityNet evaluator, detections of videos outside the evaluated set are false
positives (a warning gives their number). ``--ambiguous drop`` treats Ambiguous segments as the
THUMOS'14 toolkit (TH14evalDet) does: a detection overlapping one of its video's Ambiguous segments
is removed from the ranking where it would be a false positive (a true positive stays); the default
``keep`` scores every detection like the ActivityNet evaluator. Imports NumPy and the standard library only (plus
the project's torch-free ``core`` helpers): no torch, Lightning or decord."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.data import DataFormatError, read_json
from datamodules.thumos14_annotations import (
    AMBIGUOUS,
    THUMOS14_CLASSES,
    parse_annotation_file,
    read_annotation_database,
)
from tasks.talnet.protocol import evaluate_detections


def load_ground_truth(
    path: str | Path,
    subset: str = "Test",
    suffix: str = "test",
    classes: Sequence[str] = THUMOS14_CLASSES,
):
    """Video names, ground truth (M, 4: video index, label, start, end) of the evaluated set in
    file order, and each video's Ambiguous segments (video index -> (k, 2))."""
    path = Path(path)
    rows, videos, ambiguous = [], [], {}
    if path.is_dir():
        segments = []
        for label in [*classes, AMBIGUOUS]:
            segments += parse_annotation_file(path / f"{label}_{suffix}.txt", label)
        videos = list(dict.fromkeys(s.video for s in segments))
        index = {v: i for i, v in enumerate(videos)}
        for s in segments:
            if s.label == AMBIGUOUS:
                ambiguous.setdefault(index[s.video], []).append((s.start, s.end))
            else:
                rows.append((index[s.video], classes.index(s.label), s.start, s.end))
    else:
        database = {k: v for k, v in read_annotation_database(path, classes).items() if v["subset"] == subset}
        if not database:
            raise DataFormatError(path, f'no video has subset "{subset}"')
        videos = list(database)  # file order: the official evaluator's order
        for i, name in enumerate(videos):
            rows += [(i, int(c), s, e) for (s, e), c in zip(database[name]["segments"], database[name]["labels"])]
            if len(database[name]["ambiguous"]):
                ambiguous[i] = database[name]["ambiguous"].tolist()
    ambiguous = {k: np.asarray(v, dtype=np.float64).reshape(-1, 2) for k, v in ambiguous.items()}
    return videos, np.asarray(rows, dtype=np.float64).reshape(-1, 4), ambiguous


def load_results(path: str | Path, videos: Sequence[str], classes: Sequence[str] = THUMOS14_CLASSES):
    """Detections (N, 5: video index, label, start, end, score) from an ActivityNet results JSON,
    in file order, and the number of them on videos outside ``videos`` (those get indices from
    ``len(videos)`` on: no ground truth, so false positives). Refuses NaN/inf scores and times and
    segments that end before they start, naming the entry."""
    data = read_json(path, "an ActivityNet-format results JSON")
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise DataFormatError(path, 'expected a top-level object with a "results" object')
    index = {v: i for i, v in enumerate(videos)}
    label_index = {c: i for i, c in enumerate(classes)}
    rows, outside = [], 0
    for video, detections in data["results"].items():
        if not isinstance(detections, list):
            raise DataFormatError(path, f"results.{video} must be a list of detections")
        if video not in index:
            index[video] = len(index)
        v = index[video]
        for k, det in enumerate(detections):
            try:
                label, score = det["label"], float(det["score"])
                start, end = (float(x) for x in det["segment"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(
                    path, f'results.{video}[{k}] needs "label", "score" and a 2-number "segment"'
                ) from err
            if label not in label_index:
                raise DataFormatError(path, f"results.{video}[{k}]: unknown label {label!r}")
            if not math.isfinite(score):
                raise DataFormatError(path, f"results.{video}[{k}]: score is {score}")
            if not (math.isfinite(start) and math.isfinite(end)):
                raise DataFormatError(path, f"results.{video}[{k}]: segment [{start}, {end}]")
            if end < start:
                raise DataFormatError(path, f"results.{video}[{k}]: segment [{start}, {end}] ends before it starts")
            outside += v >= len(videos)
            rows.append((v, label_index[label], start, end, score))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), int(outside)


def overlaps_ambiguous(detections: np.ndarray, ambiguous: dict[int, np.ndarray]) -> np.ndarray:
    """Mask of detections whose interval overlaps (positive intersection) an Ambiguous segment of
    their video: the THUMOS'14 toolkit's test (``sum(intervaloverlapvalseconds(amb, det)) > 0``)."""
    mask = np.zeros(len(detections), dtype=bool)
    for video, segments in ambiguous.items():
        rows = np.flatnonzero(detections[:, 0] == video)
        if len(rows) == 0 or len(segments) == 0:
            continue
        s, e = detections[rows, 2:3], detections[rows, 3:4]
        inter = np.minimum(e, segments[None, :, 1]) - np.maximum(s, segments[None, :, 0])
        mask[rows] = (inter > 0).any(1)
    return mask


def score_results(
    results: str | Path,
    annotations: str | Path,
    subset: str = "Test",
    suffix: str = "test",
    ambiguous: str = "keep",
) -> dict:
    """The metrics of one results file: mAP@0.1..0.7, ``mAP`` (0.3:0.7), and counts."""
    if ambiguous not in ("keep", "drop"):
        raise ValueError(f"ambiguous must be 'keep' or 'drop', not {ambiguous!r}")
    videos, ground_truth, ambiguous_segments = load_ground_truth(annotations, subset, suffix)
    detections, outside = load_results(results, videos)
    ignore = overlaps_ambiguous(detections, ambiguous_segments) if ambiguous == "drop" else None
    if outside:
        warnings.warn(
            f"{results}: {outside} detections are on videos outside the evaluated set; they "
            "count as false positives (as in the official ActivityNet evaluator)",
            stacklevel=2,
        )
    result = evaluate_detections(detections, ground_truth, len(THUMOS14_CLASSES), ignore_if_false=ignore)
    return {
        **result.as_dict(),
        "videos": len(videos),
        "detections": len(detections),
        "outside_detections": outside,
        # detections that leave the ranking when false (--ambiguous drop), or 0
        "ambiguous_overlapping": int(ignore.sum()) if ignore is not None else 0,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="ActivityNet-format results JSON")
    parser.add_argument("--annotations", required=True, help="JSON database or folder of <Class>_<suffix>.txt")
    parser.add_argument("--subset", default="Test", help="subset of the JSON database to evaluate")
    parser.add_argument("--suffix", default="test", help="file suffix in an annotation folder (val or test)")
    parser.add_argument(
        "--ambiguous",
        choices=("keep", "drop"),
        default="keep",
        help="drop: false positives overlapping an Ambiguous segment leave the ranking (THUMOS'14 toolkit)",
    )
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    args = parser.parse_args(argv)
    metrics = score_results(args.results, args.annotations, args.subset, args.suffix, args.ambiguous)
    for key, value in metrics.items():
        print(f"{key:>20s}  {value:.6f}" if isinstance(value, float) else f"{key:>20s}  {value}")
    if args.out:
        from core.io import atomic_write_json

        atomic_write_json(args.out, metrics)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
