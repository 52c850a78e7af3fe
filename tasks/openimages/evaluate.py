"""Score an Open Images Challenge 2019 submission against the challenge's annotation files.

    python -m tasks.openimages.evaluate <submission.csv> --annotations <dir> --track detection
        [--out metrics.json]

``<dir>`` holds the files under their official names: challenge-2019-validation-detection-bbox.csv,
challenge-2019-validation-detection-human-imagelabels.csv, challenge-2019-label500-hierarchy.json and
(optional; else every class of the hierarchy) challenge-2019-classes-description-500.csv. The ground
truth is expanded over the hierarchy here, as the official pipeline does before its evaluator. Prints
the mAP and the per-class AP. Imports numpy and the standard library only."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from datamodules.openimages_files import (
    CHALLENGE_FILES,
    Hierarchy,
    expand_boxes,
    expand_image_labels,
    read_boxes,
    read_class_descriptions,
    read_image_labels,
)
from tasks.openimages.protocol import ImageGroundTruth, class_index, evaluate_detections
from tasks.openimages.submission import read_detection_submission

TRACKS = ("detection",)  # segmentation and relationship tracks: not built yet (docs/openimages.md)


def load_detection_ground_truth(annotations: str | Path) -> tuple[list[str], dict[str, str], list]:
    """(class MIDs in label-map order, display names, [(image id, ImageGroundTruth)]) from a folder of
    challenge files, expanded over the hierarchy. Images come from both the box and the label file."""
    root = Path(annotations)
    hierarchy = Hierarchy.read(root / CHALLENGE_FILES["hierarchy"])
    classes_file = root / CHALLENGE_FILES["classes"]
    if classes_file.exists():
        display = read_class_descriptions(classes_file)
    else:
        display = {name: name for name in sorted(hierarchy.ancestors)}
    names = list(display)
    ids = class_index(names)
    boxes, _ = read_boxes(root / CHALLENGE_FILES["boxes"])
    boxes = expand_boxes(boxes, hierarchy)
    verified = expand_image_labels(read_image_labels(root / CHALLENGE_FILES["image_labels"]), hierarchy)
    ground_truth = []
    for image_id in sorted(set(boxes) | set(verified)):
        item = boxes.get(image_id)
        labels, b, g = item.arrays() if item is not None else ([], np.zeros((0, 4)), np.zeros(0, bool))
        known = np.array([name in ids for name in labels], dtype=bool)
        ground_truth.append(
            (
                image_id,
                ImageGroundTruth(
                    labels=np.array([ids[n] for n in labels if n in ids], dtype=np.int64),
                    boxes=b[known],
                    group_of=g[known],
                    verified=np.array(sorted(ids[n] for n in verified.get(image_id, ()) if n in ids), dtype=np.int64),
                ),
            )
        )
    return names, display, ground_truth


def score_detection(submission: str | Path, annotations: str | Path) -> dict:
    """{"mAP", "per_class_AP": {MID: AP}, "display_names", "num_images", "seconds"}."""
    start = time.perf_counter()
    names, display, ground_truth = load_detection_ground_truth(annotations)
    detections = read_detection_submission(submission, class_index(names))
    mean_ap, ap = evaluate_detections(len(names), ground_truth, detections)
    return {
        "track": "detection",
        "mAP": mean_ap,
        "per_class_AP": {names[c]: float(ap[c]) for c in range(len(names)) if not np.isnan(ap[c])},
        "display_names": {names[c]: display[names[c]] for c in range(len(names)) if not np.isnan(ap[c])},
        "num_images": len(ground_truth),
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", type=Path)
    parser.add_argument("--annotations", type=Path, required=True, help="folder of the challenge files")
    parser.add_argument("--track", choices=TRACKS, default="detection")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    result = score_detection(args.submission, args.annotations)
    for mid, value in result["per_class_AP"].items():
        print(f"AP {mid} ({result['display_names'][mid]}): {value:.6f}")
    print(f"mAP: {result['mAP']:.6f}  ({len(result['per_class_AP'])} classes, {result['num_images']} images)")
    if args.out is not None:
        from core.io import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
