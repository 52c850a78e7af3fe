"""The Open Images Challenge 2019 detection metric as a pure-numpy core (no torch: the scoring CLI and
the torchmetrics wrapper both call it); its instance-segmentation variant (mask IoU, boxes without a
mask as ignore regions) is at the end of this file (``match_masks_class_in_image``).

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

from core.ap import interpolated_average_precision

IOU_THRESHOLD = 0.5


def _iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, m) IoU of x1, y1, x2, y2 boxes, continuous coordinates (np_box_ops.iou; unlike
    core.overlap.box_iou a zero union stays NaN there, which argmax then picks, as officially)."""
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


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: float) -> float:
    """All-point AP of (score, tp) pairs of one class over the data set, rule 5. False positives are
    the entries with ``tp <= 0`` (official ``compute_precision_recall``), so a weighted group-of entry
    is never counted as one."""
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]
    tp = tp[order]
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(tp <= 0)
    return interpolated_average_precision(cum_tp / (cum_tp + cum_fp), cum_tp / num_gt)


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


def finite_scores(scores: np.ndarray) -> np.ndarray:
    """``scores`` as float64, refusing NaN and infinities: a NaN has no rank (argsort puts it
    anywhere), so the mAP it gives would be a number from nonsense."""
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = scores[~np.isfinite(scores)]
        raise ValueError(f"{len(bad)} detection scores are not finite (e.g. {bad[0]}); refusing to rank them")
    return scores


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
        scores = finite_scores(det.scores)
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
            ap[c] = average_precision(scores, tp, float(self.num_gt[c]))
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


# ---------------------------------------------------------------------------------------------------
# Instance segmentation (mask IoU)
# ---------------------------------------------------------------------------------------------------

MASK_EPSILON = np.float32(1e-7)  # np_mask_ops.EPSILON


def mask_box(masks: np.ndarray) -> np.ndarray:
    """(n, 4) normalized x1, y1, x2, y2 enclosing each (n, H, W) mask, zeros for an empty one (the
    official ``_to_normalized_box``: ``xmin = min(col) / W``, ``xmax = (max(col) + 1) / W``, ...)."""
    masks = np.asarray(masks, dtype=bool)
    n, h, w = masks.shape
    out = np.zeros((n, 4))
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in np.flatnonzero(rows.any(axis=1)):
        r, c = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        out[i] = (float(c[0]) / w, float(r[0]) / h, float(c[-1] + 1) / w, float(r[-1] + 1) / h)
    return out


def _mask_overlaps(det: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(intersection (n, m), detection areas (n,), ground-truth areas (m,)) as float32, the official
    ``np_mask_ops`` precision; only the pixels of the ground-truth masks enter the product."""
    d = det.reshape(len(det), -1)
    g = gt.reshape(len(gt), -1)
    inside = np.flatnonzero(g.any(axis=0))
    inter = d[:, inside].astype(np.float32) @ g[:, inside].astype(np.float32).T
    return inter, d.sum(axis=1).astype(np.float32), g.sum(axis=1).astype(np.float32)


def mask_iou(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, m) mask IoU, ``intersect / max(area1 + area2 - intersect, EPSILON)`` (np_mask_ops.iou)."""
    inter, area_d, area_g = _mask_overlaps(det, gt)
    return inter / np.maximum(area_d[:, None] + area_g[None, :] - inter, MASK_EPSILON)


def mask_ioa(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(n, m) intersection over the *detection's* mask area, ``intersect / (area + EPSILON)``
    (np_mask_ops.ioa(gt, det), transposed)."""
    inter, area_d, _ = _mask_overlaps(det, gt)
    return inter / (area_d[:, None] + MASK_EPSILON)


def _match_iou(iou: np.ndarray, tp: np.ndarray, to_group: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy IoU matching in rank order (``compute_match_iou``); sets ``tp``, returns the newly
    matched detections."""
    best = np.argmax(iou, axis=1)
    taken = np.zeros(iou.shape[1], dtype=bool)
    matched = np.zeros(len(tp), dtype=bool)
    for i in range(len(tp)):
        g = best[i]
        if not tp[i] and not to_group[i] and iou[i, g] >= threshold and not taken[g]:
            tp[i] = matched[i] = taken[g] = True
    return matched


def _match_ioa(ioa: np.ndarray, scores: np.ndarray, tp: np.ndarray, to_group: np.ndarray, threshold: float):
    """IoA matching to group-of regions (``compute_match_ioa``); sets ``to_group``, returns each
    region's best score among its detections."""
    best = np.argmax(ioa, axis=1)
    group_scores = np.zeros(ioa.shape[1])
    for i in range(len(tp)):
        g = best[i]
        if not tp[i] and ioa[i, g] >= threshold and not to_group[i]:
            to_group[i] = True
            group_scores[g] = max(group_scores[g], scores[i])
    return group_scores


def match_masks_class_in_image(
    det_masks: np.ndarray,
    det_scores: np.ndarray,
    gt_boxes: np.ndarray,
    gt_masks: np.ndarray,
    gt_group_of: np.ndarray,
    iou_threshold: float = IOU_THRESHOLD,
    group_of_weight: float = 1.0,
    det_boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(scores, tp weights) of one class's mask detections in one image, the mask mode of the
    official ``PerImageEvaluation._compute_tp_fp_for_single_class``. Boxes are normalized x1 y1 x2 y2;
    ``det_boxes`` default to the masks' enclosing boxes (:func:`mask_box`), as the official pipeline
    derives them. Rank order ``argsort(scores)[::-1]``, then four stages on the not yet matched:

    1. non-group-of ground truth *with* a mask: best mask IoU >= 0.5 and not taken → TP, else FP;
    2. group-of *with* a mask: mask IoA (over the detection's mask) >= 0.5 → the detection is
       removed; each such region adds one entry of weight ``group_of_weight`` at its best score
       (none when the weight or that score is 0);
    3. non-group-of *without* a mask (an empty mask: "not all boxed instances have segmentation
       annotations"): box IoU >= 0.5 with a box not yet taken → the detection is ignored (neither TP
       nor FP); a second detection on a taken box stays FP;
    4. group-of without a mask: box IoA >= 0.5 → ignored ("crowds are treated as ignore regions")."""
    order = np.argsort(det_scores)[::-1]
    scores = np.asarray(det_scores, dtype=np.float64)[order]
    masks = np.asarray(det_masks, dtype=bool)[order]
    boxes = (mask_box(masks) if det_boxes is None else np.asarray(det_boxes, dtype=np.float64)[order]).reshape(-1, 4)
    n = len(scores)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    if len(gt_boxes) == 0:
        return scores, np.zeros(n)
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_masks = np.asarray(gt_masks, dtype=bool)
    group = np.asarray(gt_group_of, dtype=bool)
    present = gt_masks.reshape(len(gt_masks), -1).any(axis=1)
    tp = np.zeros(n, dtype=bool)
    to_group = np.zeros(n, dtype=bool)
    to_box = np.zeros(n, dtype=bool)
    if np.any(present & ~group):
        _match_iou(mask_iou(masks, gt_masks[present & ~group]), tp, to_group, iou_threshold)
    group_scores = np.zeros(0)
    if np.any(present & group):
        group_scores = _match_ioa(mask_ioa(masks, gt_masks[present & group]), scores, tp, to_group, iou_threshold)
        group_scores = group_scores[(group_scores > 0) & (group_of_weight > 0)]
    if np.any(~present & ~group):
        to_box = _match_iou(_iou(boxes, gt_boxes[~present & ~group]), tp, to_group, iou_threshold)
    if np.any(~present & group):
        _match_ioa(_ioa(boxes, gt_boxes[~present & group]), scores, tp, to_group, iou_threshold)
    keep = ~to_group & ~to_box
    return (
        np.concatenate([scores[keep], group_scores]),
        np.concatenate([tp[keep].astype(np.float64), np.full(len(group_scores), float(group_of_weight))]),
    )


@dataclass
class ImageMaskGroundTruth:
    """One image's expanded ground truth for the segmentation track: class ids (m,), normalized boxes
    (m, 4), group-of flags (m,), masks (m, H, W) bool at the image's size (all False where a box has
    no mask) and the verified class ids of its image labels."""

    labels: np.ndarray
    boxes: np.ndarray
    group_of: np.ndarray
    masks: np.ndarray
    verified: np.ndarray


@dataclass
class ImageMaskDetections:
    """One image's mask detections: class ids (n,), scores (n,), masks (n, H, W) bool."""

    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray


class SegmentationAccumulator(DetectionAccumulator):
    """The challenge's instance-segmentation mAP (``OpenImagesChallengeEvaluator(evaluate_masks=True)``,
    as metrics/oid_challenge_evaluation.py builds it): the detection protocol with mask IoU, where
    boxes without a mask are ignore regions and do not count as ground truth (they are passed as
    "difficult"); group-of boxes with a mask count ``group_of_weight`` each (1.0 in that script, 0.0 in
    ``OpenImagesInstanceSegmentationChallengeEvaluator``: equal on the challenge's data, whose group-of
    boxes carry no mask)."""

    def __init__(self, num_classes: int, iou_threshold: float = IOU_THRESHOLD, group_of_weight: float = 1.0):
        super().__init__(num_classes, iou_threshold)
        self.group_of_weight = float(group_of_weight)
        self.num_gt = np.zeros(self.num_classes, dtype=np.float64)

    def add_image(self, gt: ImageMaskGroundTruth, det: ImageMaskDetections | None) -> None:  # type: ignore[override]
        self.num_gt += self.count_ground_truth(gt)
        for c, scores, tp in self.match_image(gt, det):
            self._scores[c].append(scores)
            self._tp[c].append(tp)

    def count_ground_truth(self, gt: ImageMaskGroundTruth) -> np.ndarray:
        """(num_classes,) ground-truth count of one image: boxes with a mask, group-of ones weighted
        ``group_of_weight``; boxes without a mask count nothing (the official "difficult" flag)."""
        labels = np.asarray(gt.labels, dtype=np.int64)
        group = np.asarray(gt.group_of, dtype=bool)
        masks = np.asarray(gt.masks, dtype=bool)
        present = masks.reshape(len(masks), -1).any(axis=1) if len(labels) else np.zeros(0, dtype=bool)
        single = np.bincount(labels[present & ~group], minlength=self.num_classes)[: self.num_classes]
        groups = np.bincount(labels[present & group], minlength=self.num_classes)[: self.num_classes]
        return single + self.group_of_weight * groups

    def match_image(
        self, gt: ImageMaskGroundTruth, det: ImageMaskDetections | None
    ) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """[(class id, scores, tp weights)] of one image: detections of classes neither boxed nor
        verified there dropped, empty masks dropped, then :func:`match_masks_class_in_image` per class."""
        if det is None or len(det.labels) == 0:
            return []
        labels = np.asarray(gt.labels, dtype=np.int64)
        det_labels = np.asarray(det.labels, dtype=np.int64)
        det_masks = np.asarray(det.masks, dtype=bool)
        det_scores = finite_scores(det.scores)
        evaluatable = np.union1d(labels, np.asarray(gt.verified, dtype=np.int64))
        if det_masks.shape[1:] != gt.masks.shape[1:] and len(gt.masks):
            raise ValueError(
                f"detection masks {det_masks.shape[1:]} and ground-truth masks {gt.masks.shape[1:]} differ in size"
            )
        det_boxes = mask_box(det_masks)
        valid = (
            np.isin(det_labels, evaluatable) & (det_boxes[:, 0] < det_boxes[:, 2]) & (det_boxes[:, 1] < det_boxes[:, 3])
        )
        gt_boxes = np.asarray(gt.boxes, dtype=np.float64).reshape(-1, 4)
        gt_masks = np.asarray(gt.masks, dtype=bool)
        group = np.asarray(gt.group_of, dtype=bool)
        out = []
        for c in np.unique(det_labels[valid]):
            d = valid & (det_labels == c)
            g = labels == c
            s, t = match_masks_class_in_image(
                det_masks[d], det_scores[d], gt_boxes[g], gt_masks[g], group[g],
                self.iou_threshold, self.group_of_weight, det_boxes[d],
            )  # fmt: skip
            out.append((int(c), s, t))
        return out
