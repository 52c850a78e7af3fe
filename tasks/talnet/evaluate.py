"""Score any ActivityNet-format detection results against THUMOS'14 annotations:

    python -m tasks.talnet.evaluate results.json --annotations <thumos14.json | annotation folder> \
        [--subset Test] [--out metrics.json]

``--annotations`` is either the JSON database of the pre-extracted form (videos of ``--subset``)
or a folder of the official per-class files (``<Class>_test.txt`` ...; ``--suffix test``).
Detections of videos outside the evaluated set are ignored (and counted)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.data import DataFormatError, require_file
from core.io import atomic_write_json
from datamodules.thumos14 import parse_annotation_file
from datamodules.thumos14_features import AMBIGUOUS, THUMOS14_CLASSES, read_annotation_database
from tasks.talnet.metrics import evaluate_detections


def load_ground_truth(
    path: str | Path,
    subset: str = "Test",
    suffix: str = "test",
    classes: Sequence[str] = THUMOS14_CLASSES,
):
    """Video names and ground truth (M, 4: video index, label, start, end) of the evaluated set."""
    path = Path(path)
    rows, videos = [], []
    if path.is_dir():
        segments = []
        for label in [*classes, AMBIGUOUS]:
            segments += parse_annotation_file(path / f"{label}_{suffix}.txt", label)
        videos = sorted({s.video for s in segments})
        index = {v: i for i, v in enumerate(videos)}
        rows = [
            (index[s.video], classes.index(s.label), s.start, s.end)
            for s in segments
            if s.label != AMBIGUOUS
        ]
    else:
        database = {
            k: v
            for k, v in read_annotation_database(path, classes).items()
            if v["subset"] == subset
        }
        if not database:
            raise DataFormatError(path, f'no video has subset "{subset}"')
        videos = sorted(database)
        for i, name in enumerate(videos):
            rows += [
                (i, int(c), s, e)
                for (s, e), c in zip(database[name]["segments"], database[name]["labels"])
            ]
    return videos, np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def load_results(
    path: str | Path, videos: Sequence[str], classes: Sequence[str] = THUMOS14_CLASSES
):
    """Detections (N, 5: video index, label, start, end, score) from an ActivityNet results JSON,
    and the number of detections on videos outside ``videos``."""
    path = require_file(path, "an ActivityNet-format results JSON")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"not valid JSON ({err.msg})", err.lineno) from err
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise DataFormatError(path, 'expected a top-level object with a "results" object')
    index = {v: i for i, v in enumerate(videos)}
    label_index = {c: i for i, c in enumerate(classes)}
    rows, ignored = [], 0
    for video, detections in data["results"].items():
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
            if video not in index:
                ignored += 1
                continue
            rows.append((index[video], label_index[label], start, end, score))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5), ignored


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="ActivityNet-format results JSON")
    parser.add_argument(
        "--annotations", required=True, help="JSON database or folder of <Class>_<suffix>.txt"
    )
    parser.add_argument("--subset", default="Test", help="subset of the JSON database to evaluate")
    parser.add_argument(
        "--suffix", default="test", help="file suffix in an annotation folder (val or test)"
    )
    parser.add_argument("--out", default=None, help="write the metrics JSON here")
    args = parser.parse_args(argv)
    videos, ground_truth = load_ground_truth(args.annotations, args.subset, args.suffix)
    detections, ignored = load_results(args.results, videos)
    result = evaluate_detections(detections, ground_truth, len(THUMOS14_CLASSES))
    metrics = {
        **result.as_dict(),
        "videos": len(videos),
        "detections": len(detections),
        "ignored_detections": ignored,
    }
    for key, value in metrics.items():
        print(f"{key:>20s}  {value:.4f}" if isinstance(value, float) else f"{key:>20s}  {value}")
    if args.out:
        atomic_write_json(args.out, metrics)
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
