"""Score an Open Images Challenge 2019 submission against the challenge's annotation files.

    python -m tasks.openimages.evaluate <submission.csv> --annotations <dir> --track detection|segmentation|relationship
        [--out metrics.json]

``<dir>`` holds the files under their official names: challenge-2019-validation-detection-bbox.csv,
challenge-2019-validation-detection-human-imagelabels.csv, challenge-2019-label500-hierarchy.json and
(optional; else every class of the hierarchy) challenge-2019-classes-description-500.csv. The ground
truth is expanded over the hierarchy here, as the official pipeline does before its evaluator. Prints
the mAP and the per-class AP. Imports numpy and the standard library only (and pycocotools and PIL
for the segmentation track, whose files are listed in :func:`load_segmentation_ground_truth`).

``--track relationship`` scores a Kaggle visual-relationship submission against
challenge-2019-validation-vrd.csv, challenge-2019-validation-vrd-labels.csv, challenge-2019-classes-vrd.csv,
challenge-2019-attributes-description.csv (optional) and challenge-2019-relationships-description.csv
(tasks/openimages/relationship/protocol.py) and prints 0.4 mAP(relationships) + 0.2 Recall@50 + 0.4 mAP(phrases)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import DataFormatError
from datamodules.openimages_files import (
    CHALLENGE_FILES,
    Hierarchy,
    expand_boxes,
    expand_image_labels,
    read_boxes,
    read_class_descriptions,
    read_image_labels,
)
from datamodules.openimages_masks import CHALLENGE_SEGMENTATION_FILES, expand_masks, load_mask, read_segmentations
from tasks.openimages.protocol import (
    ImageGroundTruth,
    ImageMaskDetections,
    ImageMaskGroundTruth,
    SegmentationAccumulator,
    class_index,
    evaluate_detections,
)
from tasks.openimages.relationship.protocol import score_relationship
from tasks.openimages.submission import read_detection_submission, read_segmentation_submission

TRACKS = ("detection", "segmentation", "relationship")


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


def _label_map(root: Path, hierarchy: Hierarchy, classes_file: str) -> dict[str, str]:
    """{MID: display name} of the class file if present, else of every hierarchy class."""
    if (root / classes_file).exists():
        return read_class_descriptions(root / classes_file)
    return {name: name for name in sorted(hierarchy.ancestors)}


@dataclass
class SegmentationGroundTruth:
    """The challenge's segmentation ground truth, expanded: ``instances`` {image id: [(MID, normalized
    x1 y1 x2 y2, group-of, mask PNG or None)]}, ``verified`` {image id: verified MIDs}, the label map
    (``names`` in order, ``display`` names) and the number of masks that found no box."""

    names: list[str]
    display: dict[str, str]
    instances: dict[str, list[tuple[str, tuple[float, float, float, float], bool, Path | None]]]
    verified: dict[str, set[str]]
    masks_without_box: int


def load_segmentation_ground_truth(annotations: str | Path) -> SegmentationGroundTruth:
    """The ground truth of the challenge's segmentation files (names in ``CHALLENGE_SEGMENTATION_FILES``),
    expanded over the hierarchy. Boxes and masks are joined as the official
    ``merge_boxes_and_masks`` does: an outer join on class and *identical* coordinates, rows in its
    sorted key order; a box without a mask is kept (an ignore region), a mask without a box is an
    instance of its own (non-group-of). Images come from the box, mask and label files."""
    root = Path(annotations)
    files = CHALLENGE_SEGMENTATION_FILES
    hierarchy = Hierarchy.read(root / files["hierarchy"])
    display = _label_map(root, hierarchy, files["classes"])
    boxes, _ = read_boxes(root / files["boxes"])
    boxes = expand_boxes(boxes, hierarchy)
    masks, _ = read_segmentations(root / files["masks"], root / files["masks_dir"])
    masks = expand_masks(masks, hierarchy)
    verified = expand_image_labels(read_image_labels(root / files["image_labels"]), hierarchy)
    instances: dict[str, list] = {}
    unmatched = 0
    for image_id in sorted(set(boxes) | set(masks) | set(verified)):
        by_key: dict[tuple, list] = {}
        item = boxes.get(image_id)
        for label, box, group in zip(*(item.labels, item.boxes, item.group_of) if item else ((), (), ())):
            x1, y1, x2, y2 = box
            by_key.setdefault((label, x1, x2, y1, y2), [[], []])[0].append(group)
        for m in masks.get(image_id, ()):
            x1, y1, x2, y2 = m.box
            by_key.setdefault((m.label, x1, x2, y1, y2), [[], []])[1].append(m.mask_path)
        rows = []
        for (label, x1, x2, y1, y2), (groups, paths) in by_key.items():
            unmatched += len(paths) if not groups else 0
            for group in groups or [False]:
                for path in paths or [None]:
                    rows.append((label, x1, x2, y1, y2, int(group), path))
        rows.sort(key=lambda r: r[:6])  # pandas' outer merge sorts by its keys
        instances[image_id] = [(r[0], (r[1], r[3], r[2], r[4]), bool(r[5]), r[6]) for r in rows]
    return SegmentationGroundTruth(list(display), display, instances, verified, unmatched)


def score_segmentation(submission: str | Path, annotations: str | Path, group_of_weight: float = 1.0) -> dict:
    """{"mAP", "per_class_AP", "display_names", "num_images", "masks_without_box", "seconds"}. Ground-truth
    masks are resized (nearest) to the image size the submission gives for that image; for an image
    missing from the submission only whether each mask is empty matters (it has no detections)."""
    start = time.perf_counter()
    truth = load_segmentation_ground_truth(annotations)
    names, display = truth.names, truth.display
    ids = class_index(names)
    submitted = read_segmentation_submission(submission, ids)
    acc = SegmentationAccumulator(len(names), group_of_weight=group_of_weight)
    for image_id, items in truth.instances.items():
        items = [it for it in items if it[0] in ids]
        row = submitted.get(image_id)
        shape = (row.height, row.width) if row is not None else (1, 1)  # no detections: presence only
        masks = np.zeros((len(items), *shape), dtype=bool)
        loaded: dict[Path, np.ndarray] = {}  # an expanded mask is read once for all its classes
        for k, (_, _, _, path) in enumerate(items):
            if path is not None:
                if path not in loaded:
                    loaded[path] = load_mask(path, (row.width, row.height)) if row else load_mask(path).any()
                masks[k] = loaded[path]
        gt = ImageMaskGroundTruth(
            labels=np.array([ids[it[0]] for it in items], dtype=np.int64),
            boxes=np.array([it[1] for it in items], dtype=np.float64).reshape(-1, 4),
            group_of=np.array([it[2] for it in items], dtype=bool),
            masks=masks,
            verified=np.array(sorted(ids[n] for n in truth.verified.get(image_id, ()) if n in ids), dtype=np.int64),
        )
        det = None if row is None else ImageMaskDetections(labels=row.labels, scores=row.scores, masks=row.decode())
        acc.add_image(gt, det)
    mean_ap, ap = acc.compute()
    return {
        "track": "segmentation",
        "mAP": mean_ap,
        "per_class_AP": {names[c]: float(ap[c]) for c in range(len(names)) if not np.isnan(ap[c])},
        "display_names": {names[c]: display[names[c]] for c in range(len(names)) if not np.isnan(ap[c])},
        "num_images": len(truth.instances),
        "masks_without_box": truth.masks_without_box,
        "seconds": time.perf_counter() - start,
    }


def print_map_result(result: dict) -> None:
    """The report of :func:`score_detection` / :func:`score_segmentation`: per-class AP, then the mAP."""
    for mid, value in result["per_class_AP"].items():
        print(f"AP {mid} ({result['display_names'][mid]}): {value:.6f}")
    print(f"mAP: {result['mAP']:.6f}  ({len(result['per_class_AP'])} classes, {result['num_images']} images)")
    if result.get("masks_without_box"):
        print(f"note: {result['masks_without_box']} masks have no box of identical class and coordinates")


def print_relationship_result(result: dict) -> None:
    """The report of :func:`score_relationship`: AP per relationship, the three parts, the score."""
    for name, value in result["per_relationship_AP"].items():
        print(f"AP relationship {name}: {value:.6f}  phrase: {result['per_relationship_phrase_AP'][name]:.6f}")
    print(
        f"mAP(relationships): {result['map_relationship']:.6f}  Recall@50(relationships): "
        f"{result['recall50_relationship']:.6f}  mAP(phrases): {result['map_phrase']:.6f}"
    )
    print(f"score (0.4 / 0.2 / 0.4): {result['score']:.6f}  ({result['num_images']} images)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submission", type=Path)
    parser.add_argument("--annotations", type=Path, required=True, help="folder of the challenge files")
    parser.add_argument("--track", choices=TRACKS, default="detection")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    try:
        if args.track == "relationship":  # challenge-2019-*-vrd* files: tasks/openimages/relationship/protocol.py
            result = score_relationship(args.submission, args.annotations)
        elif args.track == "segmentation":
            result = score_segmentation(args.submission, args.annotations)
        else:
            result = score_detection(args.submission, args.annotations)
    except (DataFormatError, FileNotFoundError, ValueError) as err:  # one line naming the file, no trace
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.track == "relationship":
        print_relationship_result(result)
    else:
        print_map_result(result)
    if args.out is not None:
        from core.io import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
