"""The Open Images Challenge 2019 detection metric as a pure-numpy core (no torch: the scoring CLI and
the torchmetrics wrapper both call it).

It reproduces tensorflow/models research/object_detection (``OpenImagesDetectionChallengeEvaluator``
in utils/object_detection_evaluation.py, ``PerImageEvaluation`` in utils/per_image_evaluation.py,
``compute_precision_recall`` / ``compute_average_precision`` in utils/metrics.py), on ground truth
already expanded over the class hierarchy (``datamodules.openimages_files.expand_*``):

1. Per image, only classes that are *evaluatable* there count: the classes of its (expanded) boxes
   and of its (expanded) human-verified image labels, present or absent. A detection of any other
   class is dropped: a class neither annotated nor verified is not a negative.
2. Detections with an empty box (xmax <= xmin or ymax <= ymin) are dropped; per class, detections are
   ranked by descending score (``np.argsort(scores)[::-1]``, the official tie order).
3. Non-group-of boxes: each detection takes the ground truth of largest IoU; "if IoU >= 0.5 and that
   box is not yet matched: true positive, else false positive" in rank order (a duplicate is a false
   positive).
4. Group-of boxes: a detection still unmatched whose intersection-over-detection-area (IoA) with the
   group-of box of largest IoA is >= 0.5 is matched to it and removed from the list; each group-of
   box matched by at least one detection contributes one true positive with the best score of its
   detections ("scores_group_of > 0": a best score of 0 contributes nothing), so ``group_of_weight=1``.
5. Per class over all images: num_gt = all its boxes (group-of ones count 1 each); rank every kept
   (score, tp) pair by ``np.argsort(scores)[::-1]``; precision = cum_tp / (cum_tp + cum_fp), recall =
   cum_tp / num_gt; AP = area under the monotone precision envelope at every recall step (all points,
   VOC 2010+); a class with ground truth but no detection has AP 0.
6. mAP = mean AP over classes of the label map that have ground truth (``np.nanmean``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLD = 0.5


def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, m) IoU of x1, y1, x2, y2 boxes, continuous coordinates (np_box_ops.iou)."""
    w = np.clip(np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0]), 0, None)
    h = np.clip(np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1]), 0, None)
    inter = w * h
    area_d = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    return inter / (area_d[:, None] + area_g[None, :] - inter)


def _ioa(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, m) intersection over the *detection's* area (np_box_ops.ioa(gt, det), transposed)."""
    w = np.clip(np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0]), 0, None)
    h = np.clip(np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1]), 0, None)
    area_d = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    return (w * h) / area_d[:, None]


def match_class_in_image(
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_group_of: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, tp labels as float) of one class's detections in one image, rules 2-4 of the module
    docstring. Detections matched to a group-of box are replaced by one entry per group-of box."""
    order = np.argsort(det_scores)[::-1]
    boxes = det_boxes[order]
    scores = det_scores[order]
    n = len(scores)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    if len(gt_boxes) == 0:
        return scores, np.zeros(n)
    tp = np.zeros(n, dtype=bool)
    to_group = np.zeros(n, dtype=bool)
    single = gt_boxes[~gt_group_of]
    if len(single):
        iou = _iou(boxes, single)
        best = np.argmax(iou, axis=1)
        best_iou = iou[np.arange(n), best]
        taken = np.zeros(len(single), dtype=bool)
        for i in np.flatnonzero(best_iou >= iou_threshold):
            if not taken[best[i]]:
                tp[i] = True
                taken[best[i]] = True
    groups = gt_boxes[gt_group_of]
    group_scores = np.zeros(0)
    if len(groups):
        ioa = _ioa(boxes, groups)
        best = np.argmax(ioa, axis=1)
        to_group = ~tp & (ioa[np.arange(n), best] >= iou_threshold)
        group_scores = np.zeros(len(groups))
        np.maximum.at(group_scores, best[to_group], scores[to_group])
        group_scores = group_scores[group_scores > 0]
    keep = ~to_group
    return (
        np.concatenate([scores[keep], group_scores]),
        np.concatenate([tp[keep].astype(np.float64), np.ones(len(group_scores))]),
    )


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """All-point AP of (score, tp) pairs of one class over the data set, rule 5."""
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]
    tp = tp[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(tp <= 0)
    precision = cum_tp / (cum_tp + cum_fp)
    recall = cum_tp / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


@dataclass
class ImageGroundTruth:
    """One image's expanded ground truth: class ids of boxes (m,), boxes (m, 4) x1 y1 x2 y2,
    group-of flags (m,), and the verified class ids of its image labels."""

    labels: np.ndarray
    boxes: np.ndarray
    group_of: np.ndarray
    verified: np.ndarray


@dataclass
class ImageDetections:
    """One image's detections: class ids (n,), scores (n,), boxes (n, 4) x1 y1 x2 y2."""

    labels: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray


class DetectionAccumulator:
    """Collects per-image (score, tp) pairs and per-class ground-truth counts, then computes the
    challenge's per-class AP and mAP (rules 1-6)."""

    def __init__(self, num_classes: int, iou_threshold: float = IOU_THRESHOLD):
        self.num_classes = int(num_classes)
        self.iou_threshold = iou_threshold
        self.num_gt = np.zeros(self.num_classes, dtype=np.int64)
        self._scores: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]
        self._tp: list[list[np.ndarray]] = [[] for _ in range(self.num_classes)]

    def add_image(self, gt: ImageGroundTruth, det: ImageDetections | None) -> None:
        gt_labels = np.asarray(gt.labels, dtype=np.int64)
        self.num_gt += np.bincount(gt_labels, minlength=self.num_classes)[: self.num_classes]
        if det is None or len(det.labels) == 0:
            return
        labels = np.asarray(det.labels, dtype=np.int64)
        boxes = np.asarray(det.boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(det.scores, dtype=np.float64)
        evaluatable = np.union1d(gt_labels, np.asarray(gt.verified, dtype=np.int64))
        valid = np.isin(labels, evaluatable) & (boxes[:, 0] < boxes[:, 2]) & (boxes[:, 1] < boxes[:, 3])
        labels, boxes, scores = labels[valid], boxes[valid], scores[valid]
        gt_boxes = np.asarray(gt.boxes, dtype=np.float64).reshape(-1, 4)
        gt_group = np.asarray(gt.group_of, dtype=bool)
        for c in np.unique(labels):
            d = labels == c
            g = gt_labels == c
            s, t = match_class_in_image(boxes[d], scores[d], gt_boxes[g], gt_group[g], self.iou_threshold)
            self._scores[c].append(s)
            self._tp[c].append(t)

    def compute(self) -> tuple[float, np.ndarray]:
        """(mAP, per-class AP with NaN for classes without ground truth). Raises ValueError when no
        class has ground truth (the mean would be undefined)."""
        ap = np.full(self.num_classes, np.nan)
        for c in np.flatnonzero(self.num_gt > 0):
            scores = np.concatenate(self._scores[c]) if self._scores[c] else np.zeros(0)
            tp = np.concatenate(self._tp[c]) if self._tp[c] else np.zeros(0)
            ap[c] = average_precision(scores, tp, int(self.num_gt[c]))
        if not np.any(self.num_gt > 0):
            raise ValueError("Open Images mAP is undefined: no class has ground-truth boxes")
        return float(np.nanmean(ap)), ap


def evaluate_detections(
    num_classes: int,
    ground_truth: Iterable[tuple[str, ImageGroundTruth]],
    detections: dict[str, ImageDetections],
    iou_threshold: float = IOU_THRESHOLD,
) -> tuple[float, np.ndarray]:
    """(mAP, per-class AP) of ``detections`` ({image id: ImageDetections}) over the images of
    ``ground_truth``; detections of images without ground truth are ignored, as officially."""
    acc = DetectionAccumulator(num_classes, iou_threshold)
    for image_id, gt in ground_truth:
        acc.add_image(gt, detections.get(image_id))
    return acc.compute()


def class_index(names: Sequence[str]) -> dict[str, int]:
    """{class MID: 0-based id} in label-map order."""
    return {name: i for i, name in enumerate(names)}
