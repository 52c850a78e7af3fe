"""The Open Images Challenge 2019 visual-relationship score as a pure-numpy core (no torch: the scoring
CLI and the torchmetrics wrapper both call it), and the track's Kaggle submission file.

It reproduces tensorflow/models research/object_detection: ``VRDRelationDetectionEvaluator`` and
``VRDPhraseDetectionEvaluator`` (utils/vrd_evaluation.py), ``PerImageVRDEvaluation``
(utils/per_image_vrd_evaluation.py), ``compute_precision_recall`` / ``compute_average_precision`` /
``compute_recall_at_k`` (utils/metrics.py), driven as metrics/oid_vrd_challenge_evaluation.py drives
them. A relationship is a tuple (subject class, object class, relationship) with a subject box and an
object box; no hierarchy expansion and no group-of boxes ("group-of boxes and hierarchy effects are not
taken into account", the challenge's evaluation page).

1. Image-level labels limit what is scored (``add_single_detected_image_info``): per image, positive
   classes = the subject and object classes of its ground-truth tuples; verified = every class of its
   image-level labels (``challenge-2019-validation-vrd-labels.csv``, any Confidence);
   ``evaluatable = unique(verified ∪ positive)``, ``negative = setdiff1d(verified, positive)``. A
   detection is kept iff "all labels are verified" (subject and object in evaluatable) or "one of the
   labels is negative (this is sure FP)". An image without ground truth keeps no detection.
2. Per image (``_compute_tp_fp``): for every distinct class tuple of ground truth and detections (in
   ``np.unique`` order), the tuple's detections are ranked by ``np.argsort(scores)[::-1]``; the overlap
   of a detection with a ground-truth tuple is the *minimum* IoU over its boxes (relationships: subject
   box and object box; phrases: one box, "an enclosing bounding box of all bounding boxes" of the tuple,
   for ground truth and detections alike); ``gt_id = argmax(min_iou)``; "if min_iou[i, gt_id] >= 0.5:
   if not is_gt_tuple_detected[gt_id]: tp" (else, a duplicate, false positive). The image's (score, tp)
   pairs are then re-ranked by ``np.argsort(scores)[::-1]``. Boxes are float32 as in the evaluator's
   ``vrd_box_data_type``; IoU follows np_box_ops (float32 areas, float64 intersection).
3. Over the data set: ``num_gt`` = ground-truth tuples (all images), per relationship and in total.
   AP of a relationship = ``compute_average_precision(compute_precision_recall(scores[rel], tp[rel],
   num_gt[rel]))`` (all-point area under the monotone precision envelope, pairs of all images ranked
   by ``np.argsort(scores)[::-1]``); **mAP = np.mean of the AP of every relationship with ground truth**
   ("mAP@0.5IOU"; "weightedAP@0.5IOU", the AP of all pairs against the total num_gt, is reported too).
   **Recall@50** = sum over images of the true positives among each image's 50 best-scored kept
   detections / total num_gt ("compute_recall_at_k": "recall evaluated on the top k by score
   detections", k per image).
4. Challenge score = 0.4 · mAP(relationships) + 0.2 · Recall@50(relationships) + 0.4 · mAP(phrases)
   (the keys "VRDMetric_Relationships_mAP@0.5IOU", "VRDMetric_Relationships_Recall@50@0.5IOU",
   "VRDMetric_Phrases_mAP@0.5IOU" of the official script, weights of the 2019 challenge).

Ties between equal scores break as numpy's ``argsort`` breaks them on the same arrays in the same order
(per-image class tuples in label-map id order, images in sorted id order, detections in file order),
which is what the official code does when its label maps number the classes in file order.

Submission (Kaggle, track "open-images-2019-visual-relationship"): header ``ImageId,PredictionString``;
the prediction string is space-separated groups of 12, ``confidence label1 xmin1 ymin1 xmax1 ymax1
label2 xmin2 ymin2 xmax2 ymax2 relationship`` (normalized boxes); an empty string means no prediction."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data import DataFormatError
from datamodules.openimages_relationships import Relationship
from tasks.openimages.protocol import average_precision
from tasks.openimages.submission import prediction_rows

IOU_THRESHOLD = 0.5
RECALL_AT = 50
SCORE_WEIGHTS = {"map_relationship": 0.4, "recall50_relationship": 0.2, "map_phrase": 0.4}
SUBMISSION_HEADER = ["ImageId", "PredictionString"]


@dataclass
class ImageRelationships:
    """One image's relationship tuples as arrays: class ids ``subject_labels``, ``object_labels``,
    relationship ids ``relationships`` (n,), boxes ``subject_boxes``, ``object_boxes`` (n, 4; x1 y1 x2
    y2); ``scores`` (n,) for detections; ``image_labels`` (k,) class ids of the image-level labels
    (ground truth; present or absent alike)."""

    subject_labels: np.ndarray
    object_labels: np.ndarray
    relationships: np.ndarray
    subject_boxes: np.ndarray
    object_boxes: np.ndarray
    scores: np.ndarray | None = None
    image_labels: np.ndarray | None = None

    @classmethod
    def empty(cls, image_labels: Iterable[int] = ()) -> ImageRelationships:
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, np.zeros((0, 4)), np.zeros((0, 4)), None, np.asarray(list(image_labels), np.int64))

    def __len__(self) -> int:
        return len(self.subject_labels)

    def classes(self) -> np.ndarray:
        """(n, 3) int64 rows (subject, object, relationship): the evaluator's ``label_data_type``."""
        return np.stack(
            [
                np.asarray(a, dtype=np.int64).reshape(-1)
                for a in (self.subject_labels, self.object_labels, self.relationships)
            ],
            axis=1,
        )


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of float32 x1 y1 x2 y2 boxes with np_box_ops.iou's arithmetic: float32 areas,
    float64 intersection (its ``np.maximum(np.zeros(...), ...)`` widens), union = area_a + area_b - inter."""
    heights = np.maximum(
        np.zeros((len(a), len(b))), np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    )
    widths = np.maximum(
        np.zeros((len(a), len(b))), np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    )
    inter = heights * widths
    area_a = (a[:, 3] - a[:, 1]) * (a[:, 2] - a[:, 0])
    area_b = (b[:, 3] - b[:, 1]) * (b[:, 2] - b[:, 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _f32(boxes: np.ndarray) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4).astype(np.float32)


def phrase_boxes(subject_boxes: np.ndarray, object_boxes: np.ndarray) -> np.ndarray:
    """The enclosing box of each subject / object pair (float32, as the phrase evaluator builds it)."""
    s, o = _f32(subject_boxes), _f32(object_boxes)
    return np.concatenate([np.minimum(s[:, :2], o[:, :2]), np.maximum(s[:, 2:], o[:, 2:])], axis=1)


def _box_fields(item: ImageRelationships, phrase: bool) -> list[np.ndarray]:
    if phrase:
        return [phrase_boxes(item.subject_boxes, item.object_boxes)]
    return [_f32(item.subject_boxes), _f32(item.object_boxes)]


def match_tuples(
    det_boxes: list[np.ndarray], gt_boxes: list[np.ndarray], iou_threshold: float = IOU_THRESHOLD
) -> np.ndarray:
    """tp flags of one class tuple's detections (already ranked) against its ground truth: the
    overlap is the minimum IoU over the box fields; greedy, a ground truth is taken once (rule 2)."""
    n = len(det_boxes[0])
    tp = np.zeros(n, dtype=bool)
    if n == 0 or len(gt_boxes[0]) == 0:
        return tp
    min_iou = np.ones((n, len(gt_boxes[0])), dtype=float)
    for d, g in zip(det_boxes, gt_boxes):
        min_iou = np.minimum(_iou(d, g), min_iou)
    best = np.argmax(min_iou, axis=1)
    taken = np.zeros(min_iou.shape[1], dtype=bool)
    for i in range(n):
        j = best[i]
        if min_iou[i, j] >= iou_threshold and not taken[j]:
            tp[i] = True
            taken[j] = True
    return tp


def keep_evaluatable(gt: ImageRelationships | None, det: ImageRelationships) -> np.ndarray:
    """Mask of the detections the image-level labels let through (rule 1)."""
    if gt is None:
        return np.zeros(len(det), dtype=bool)
    verified = set(np.asarray(gt.image_labels if gt.image_labels is not None else [], dtype=np.int64).tolist())
    positive = set(np.asarray(gt.subject_labels, np.int64).tolist()) | set(
        np.asarray(gt.object_labels, np.int64).tolist()
    )
    evaluatable = verified | positive
    negative = verified - positive
    pairs = zip(np.asarray(det.subject_labels).tolist(), np.asarray(det.object_labels).tolist())
    return np.array(
        [(a in evaluatable and b in evaluatable) or a in negative or b in negative for a, b in pairs], dtype=bool
    ).reshape(-1)


def _tuple_keys(classes: np.ndarray, base: int) -> np.ndarray:
    """(subject, object, relationship) rows as int64 keys whose order is the rows' lexicographic order."""
    return (classes[:, 0] * base + classes[:, 1]) * base + classes[:, 2]


def image_tp(
    gt: ImageRelationships, det: ImageRelationships, phrase: bool, iou_threshold: float = IOU_THRESHOLD
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, tp, relationship ids) of one image's kept detections, ranked by descending score
    (rule 2). The official loop over ``np.unique`` of the class tuples is kept in its order (tuple
    groups in lexicographic order, each ranked by ``np.argsort(scores)[::-1]`` on its own detections
    in input order), so ties break as there; tuples without ground truth are all false positives."""
    gt_classes, det_classes = gt.classes(), det.classes()
    scores = np.asarray(det.scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    base = int(max(gt_classes.max(initial=0), det_classes.max(initial=0))) + 1
    det_keys, gt_keys = _tuple_keys(det_classes, base), _tuple_keys(gt_classes, base)
    order = np.argsort(det_keys, kind="stable")  # groups in tuple order, input order within a group
    group_keys, starts, counts = np.unique(det_keys[order], return_index=True, return_counts=True)
    tp = np.zeros(n, dtype=bool)  # in the concatenated (official) order
    with_gt = np.isin(group_keys, gt_keys)
    gt_fields = det_fields = None
    for k in np.flatnonzero((counts > 1) | with_gt):
        a, b = starts[k], starts[k] + counts[k]
        members = order[a:b]
        members = members[np.argsort(scores[members])[::-1]]
        order[a:b] = members
        if with_gt[k]:
            if gt_fields is None:
                gt_fields, det_fields = _box_fields(gt, phrase), _box_fields(det, phrase)
            g = gt_keys == group_keys[k]
            tp[a:b] = match_tuples([f[members] for f in det_fields], [f[g] for f in gt_fields], iou_threshold)
    s = scores[order]
    final = np.argsort(s)[::-1]
    return s[final], tp[final], det_classes[order[final], 2]


def _subset(item: ImageRelationships, mask: np.ndarray) -> ImageRelationships:
    return ImageRelationships(
        np.asarray(item.subject_labels)[mask],
        np.asarray(item.object_labels)[mask],
        np.asarray(item.relationships)[mask],
        np.asarray(item.subject_boxes, dtype=np.float64).reshape(-1, 4)[mask],
        np.asarray(item.object_boxes, dtype=np.float64).reshape(-1, 4)[mask],
        np.asarray(item.scores, dtype=np.float64).reshape(-1)[mask],
    )


def _tracks(
    ground_truth: Mapping, detections: Mapping, iou_threshold: float, recall_at: int
) -> dict[bool, dict[str, object]]:
    """{phrase: {"map", "weighted_ap", "recall", "ap"}} for the relationship (False) and phrase (True)
    evaluators, which see the same kept detections."""
    num_gt: dict[int, int] = {}
    for gt in ground_truth.values():
        rel, counts = np.unique(np.asarray(gt.relationships, dtype=np.int64), return_counts=True)
        for r, c in zip(rel.tolist(), counts.tolist()):
            num_gt[r] = num_gt.get(r, 0) + c
    total = sum(num_gt.values())
    if total == 0:
        raise ValueError("the relationship score is undefined: the ground truth has no relationship")
    per_image: dict[bool, list] = {False: [], True: []}
    for image_id in sorted(detections):
        gt = ground_truth.get(image_id)
        det = detections[image_id]
        kept = _subset(det, keep_evaluatable(gt, det))
        for phrase in (False, True):
            per_image[phrase].append(
                image_tp(gt if gt is not None else ImageRelationships.empty(), kept, phrase, iou_threshold)
            )
    out = {}
    for phrase, results in per_image.items():
        all_scores = np.concatenate([s for s, _, _ in results]) if results else np.zeros(0)
        all_tp = np.concatenate([t for _, t, _ in results]) if results else np.zeros(0, dtype=bool)
        all_rel = np.concatenate([r for _, _, r in results]) if results else np.zeros(0, dtype=np.int64)
        ap = {r: average_precision(all_scores[all_rel == r], all_tp[all_rel == r], n) for r, n in num_gt.items()}
        out[phrase] = {
            "map": float(np.mean(list(ap.values()))),
            "weighted_ap": average_precision(all_scores, all_tp, total),
            "recall": float(sum(int(np.sum(t[:recall_at])) for _, t, _ in results)) / total,
            "ap": ap,
        }
    return out


def evaluate_relationships(
    ground_truth: Mapping[object, ImageRelationships],
    detections: Mapping[object, ImageRelationships],
    iou_threshold: float = IOU_THRESHOLD,
    recall_at: int = RECALL_AT,
) -> dict[str, object]:
    """The challenge's relationship score (module docstring, rules 1-4) of ``detections`` ({image id:
    ImageRelationships with scores}) against ``ground_truth`` ({image id: ImageRelationships with
    image_labels}; images with labels but no relationship included). Returns ``score``,
    ``map_relationship``, ``recall50_relationship``, ``map_phrase``, ``weighted_ap_relationship``,
    ``weighted_ap_phrase``, ``ap_relationship`` / ``ap_phrase`` ({relationship id: AP}). Raises
    ValueError when the ground truth has no relationship."""
    both = _tracks(ground_truth, detections, iou_threshold, recall_at)
    rel, phr = both[False], both[True]
    out = {
        "map_relationship": rel["map"],
        "recall50_relationship": rel["recall"],
        "map_phrase": phr["map"],
    }
    out["score"] = sum(SCORE_WEIGHTS[k] * out[k] for k in SCORE_WEIGHTS)
    out.update(
        weighted_ap_relationship=rel["weighted_ap"],
        weighted_ap_phrase=phr["weighted_ap"],
        recall50_phrase=phr["recall"],
        ap_relationship=rel["ap"],
        ap_phrase=phr["ap"],
    )
    return out


# ---------------------------------------------------------------------------------------------------
# The Kaggle submission file


def format_relationships(rows: Iterable[tuple[float, Relationship]]) -> str:
    """One image's prediction string from ``(score, Relationship)`` pairs."""
    parts = []
    for score, r in rows:
        (a1, b1, a2, b2), (c1, d1, c2, d2) = r.box1, r.box2
        parts.append(
            f"{float(score):.9g} {r.label1} {a1:.6f} {b1:.6f} {a2:.6f} {b2:.6f} "
            f"{r.label2} {c1:.6f} {d1:.6f} {c2:.6f} {d2:.6f} {r.relationship}"
        )
    return " ".join(parts)


def relationship_csv_text(predictions: Mapping[str, Iterable[tuple[float, Relationship]]]) -> str:
    """The relationship submission as text: ``{image id: [(score, Relationship)]}``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SUBMISSION_HEADER)
    for image_id, rows in predictions.items():
        writer.writerow([image_id, format_relationships(rows)])
    return out.getvalue()


def write_relationship_submission(
    path: str | Path, predictions: Mapping[str, Iterable[tuple[float, Relationship]]]
) -> Path:
    """Write the Kaggle relationship submission atomically (core.io): ``{image id: [(score,
    Relationship)]}``, boxes normalized x1 y1 x2 y2. Returns the path."""
    from core.io import atomic_write_text

    atomic_write_text(path, relationship_csv_text(predictions))
    return Path(path)


_NUMBERS = [0, 2, 3, 4, 5, 7, 8, 9, 10]  # confidence, box 1, box 2 within a group of 12
_NAMES = [1, 6, 11]  # label1, label2, relationship


def _submission_groups(path: Path, class_ids: Mapping[str, int] | None, relationship_ids: Mapping[str, int] | None):
    """(line, image id, names (k, 3) str, numbers (k, 9) float64) per row of a relationship submission,
    validated (errors name the line)."""
    from datamodules.openimages_files import check_box

    group = "confidence label1 xmin1 ymin1 xmax1 ymax1 label2 xmin2 ymin2 xmax2 ymax2 relationship"
    for line, (image_id,), groups in prediction_rows(path, SUBMISSION_HEADER, group):
        try:
            numbers = groups[:, _NUMBERS].astype(np.float64)
        except ValueError:
            raise DataFormatError(path, "a score or coordinate is not a number", line) from None
        boxes = numbers[:, 1:].reshape(-1, 4)  # x1 y1 x2 y2 per box
        bad = ~(
            np.all((boxes >= 0) & (boxes <= 1), axis=1) & (boxes[:, 0] <= boxes[:, 2]) & (boxes[:, 1] <= boxes[:, 3])
        )
        if bad.any():
            x1, y1, x2, y2 = boxes[np.flatnonzero(bad)[0]].tolist()
            check_box(path, line, x1, x2, y1, y2)
            raise DataFormatError(path, f"box ({x1}, {x2}, {y1}, {y2}) is not a number", line)  # NaN
        names = groups[:, _NAMES]
        if class_ids is not None:
            unknown = [n for n in names[:, :2].ravel().tolist() if n not in class_ids]
            if unknown:
                raise DataFormatError(path, f"unknown class {unknown[0]!r}", line)
        if relationship_ids is not None:
            unknown = [n for n in names[:, 2].tolist() if n not in relationship_ids]
            if unknown:
                raise DataFormatError(path, f"unknown relationship {unknown[0]!r}", line)
        yield line, image_id, names, numbers


def read_relationship_submission(
    path: str | Path, class_ids: Mapping[str, int] | None = None, relationship_ids: Mapping[str, int] | None = None
) -> dict[str, list[tuple[float, Relationship]]]:
    """``{ImageId: [(score, Relationship)]}`` in file order. A repeated image, a group that is not 12
    fields, a non-numeric score or coordinate, a box outside [0, 1] / with min > max, or (when the
    name lists are given) an unknown class or relationship names the line."""
    out: dict[str, list[tuple[float, Relationship]]] = {}
    for _, image_id, names, numbers in _submission_groups(Path(path), class_ids, relationship_ids):
        out[image_id] = [
            (v[0], Relationship(a, b, tuple(v[1:5]), tuple(v[5:9]), r))
            for (a, b, r), v in zip(names.tolist(), numbers.tolist())
        ]
    return out


def read_relationship_submission_arrays(
    path: str | Path, class_ids: Mapping[str, int], relationship_ids: Mapping[str, int]
) -> dict[str, ImageRelationships]:
    """The submission as ``{ImageId: ImageRelationships}`` of ids with scores, rows in file order
    (what the scorer needs; same validation as :func:`read_relationship_submission`)."""
    out: dict[str, ImageRelationships] = {}
    for _, image_id, names, numbers in _submission_groups(Path(path), class_ids, relationship_ids):
        out[image_id] = ImageRelationships(
            np.array([class_ids[n] for n in names[:, 0].tolist()], dtype=np.int64),
            np.array([class_ids[n] for n in names[:, 1].tolist()], dtype=np.int64),
            np.array([relationship_ids[n] for n in names[:, 2].tolist()], dtype=np.int64),
            numbers[:, 1:5],
            numbers[:, 5:9],
            numbers[:, 0],
        )
    return out


def to_arrays(
    rows: Sequence[tuple[float, Relationship]] | Sequence[Relationship],
    class_ids: Mapping[str, int],
    relationship_ids: Mapping[str, int],
    where: str = "",
    scored: bool | None = None,
) -> ImageRelationships:
    """Relationships, ``(score, Relationship)`` pairs when ``scored`` (default: guessed from the first
    row), as ImageRelationships of ids; an unknown class or relationship is a ValueError naming ``where``."""
    if scored is None:
        scored = bool(rows) and isinstance(rows[0], tuple)
    items = [r for _, r in rows] if scored else list(rows)
    try:
        s = [class_ids[r.label1] for r in items]
        o = [class_ids[r.label2] for r in items]
        p = [relationship_ids[r.relationship] for r in items]
    except KeyError as err:
        raise ValueError(f"{where}: unknown class or relationship {err.args[0]!r}") from None
    return ImageRelationships(
        np.asarray(s, dtype=np.int64),
        np.asarray(o, dtype=np.int64),
        np.asarray(p, dtype=np.int64),
        np.asarray([r.box1 for r in items], dtype=np.float64).reshape(-1, 4),
        np.asarray([r.box2 for r in items], dtype=np.float64).reshape(-1, 4),
        np.asarray([sc for sc, _ in rows], dtype=np.float64) if scored else None,
    )


# ---------------------------------------------------------------------------------------------------
# Scoring a submission against a folder of challenge files (the CLI's relationship track)


def load_relationship_ground_truth(
    annotations: str | Path,
) -> tuple[dict[str, int], dict[str, int], dict[str, ImageRelationships]]:
    """(class ids, relationship ids, {image id: ImageRelationships}) from a folder holding the
    challenge's files under their official names (``CHALLENGE_VRD_FILES``). Class ids number the VRD
    classes then the attributes (optional file) in file order, relationship ids the relationship names.
    Images come from the relationship file and the image-level label file; a label of a class outside
    the lists is dropped (no detection can carry it); an unknown class or relationship in the ground
    truth is a ValueError."""
    from datamodules.openimages_files import read_class_descriptions, read_image_labels
    from datamodules.openimages_relationships import CHALLENGE_VRD_FILES, read_relationships

    root = Path(annotations)
    names = list(read_class_descriptions(root / CHALLENGE_VRD_FILES["classes"]))
    if (root / CHALLENGE_VRD_FILES["attributes"]).exists():
        names += [n for n in read_class_descriptions(root / CHALLENGE_VRD_FILES["attributes"]) if n not in names]
    class_ids = {name: i for i, name in enumerate(names)}
    relationship_ids = {
        name: i for i, name in enumerate(read_class_descriptions(root / CHALLENGE_VRD_FILES["relationship_names"]))
    }
    path = root / CHALLENGE_VRD_FILES["relationships"]
    relationships, _ = read_relationships(path)
    labels = read_image_labels(root / CHALLENGE_VRD_FILES["image_labels"])
    ground_truth = {}
    for image_id in sorted(set(relationships) | set(labels)):
        item = to_arrays(relationships.get(image_id, []), class_ids, relationship_ids, f"{path} (image {image_id})")
        item.image_labels = np.asarray(
            sorted({class_ids[n] for n in labels.get(image_id, {}) if n in class_ids}), dtype=np.int64
        )
        ground_truth[image_id] = item
    return class_ids, relationship_ids, ground_truth


def score_relationship(submission: str | Path, annotations: str | Path) -> dict:
    """The relationship track's metrics of a Kaggle submission against a folder of challenge files:
    {"score", "map_relationship", "recall50_relationship", "map_phrase", "weighted_ap_*",
    "per_relationship_AP", "per_relationship_phrase_AP", "num_images", "seconds"}."""
    import time

    start = time.perf_counter()
    class_ids, relationship_ids, ground_truth = load_relationship_ground_truth(annotations)
    detections = read_relationship_submission_arrays(submission, class_ids, relationship_ids)
    result = evaluate_relationships(ground_truth, detections)
    names = {i: n for n, i in relationship_ids.items()}
    out = {"track": "relationship"}
    out.update({k: v for k, v in result.items() if not k.startswith("ap_")})
    out["per_relationship_AP"] = {names[r]: v for r, v in sorted(result["ap_relationship"].items())}
    out["per_relationship_phrase_AP"] = {names[r]: v for r, v in sorted(result["ap_phrase"].items())}
    out["num_images"] = len(ground_truth)
    out["seconds"] = time.perf_counter() - start
    return out
