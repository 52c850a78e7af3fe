"""The Open Images Challenge 2019 detection and instance-segmentation metrics as torchmetrics Metrics
(DDP-correct)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from core.metrics import PerSampleMetric
from tasks.openimages.protocol import (
    DetectionAccumulator,
    ImageDetections,
    ImageGroundTruth,
    ImageMaskDetections,
    ImageMaskGroundTruth,
    SegmentationAccumulator,
)


def _rows(*columns: Any) -> torch.Tensor:
    """Columns (n,) or (n, k) side by side as an (n, total) float64 table (n may be 0)."""
    cols = [torch.as_tensor(np.asarray(c) if not isinstance(c, torch.Tensor) else c) for c in columns]
    n = len(cols[0])
    if n == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat([c.detach().cpu().to(torch.float64).reshape(n, -1) for c in cols], 1)


class OpenImagesChallengeMAP(PerSampleMetric):
    """Open Images Challenge 2019 detection mAP at IoU 0.5 (tensorflow/models research/
    object_detection ``OpenImagesDetectionChallengeEvaluator`` with ``PerImageEvaluation``; rules in
    tasks/openimages/protocol.py): only classes annotated or verified in an image are scored there,
    group-of boxes count once with their best-scoring detection inside (IoA >= 0.5), duplicates are
    false positives, all-point AP per class, mean over classes with ground truth.

    ``update(image_ids, preds, targets)``: ``preds[i]`` has ``boxes`` (n, 4; x1 y1 x2 y2 in any one
    scale shared with the targets), ``scores`` (n,), ``labels`` (n,) class ids; ``targets[i]`` has
    ``boxes``, ``labels``, ``group_of`` (m,) and ``verified`` (k,) class ids of the human-verified
    image labels (present or absent). Ground truth must already be expanded over the class hierarchy
    (``datamodules.openimages_files.expand_boxes`` / ``expand_image_labels``), as the challenge does.
    ``compute()`` returns ``{"map": mAP, "ap/<class id>": AP}`` for the classes with ground truth."""

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.add_table("detections", width=6)  # label, score, x1, y1, x2, y2
        self.add_table("ground_truth", width=6)  # label, x1, y1, x2, y2, group-of
        self.add_table("verified", width=1)  # label

    def update(
        self, image_ids: Sequence[int], preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        tag = self.new_tag()
        for image_id, pred, target in zip(image_ids, preds, targets):
            image_id = int(image_id)
            self.append_rows("detections", image_id, _rows(pred["labels"], pred["scores"], pred["boxes"]), tag)
            self.append_rows(
                "ground_truth", image_id, _rows(target["labels"], target["boxes"], target["group_of"]), tag
            )
            self.append_rows("verified", image_id, _rows(target["verified"]), tag)

    def compute(self) -> dict[str, torch.Tensor]:
        detections, ground_truth, verified = self.tables("detections", "ground_truth", "verified")
        acc = DetectionAccumulator(self.num_classes, self.iou_threshold)
        images = np.unique(np.concatenate([ground_truth[:, 0], verified[:, 0]]))
        det_by = _split_by_image(detections)
        gt_by = _split_by_image(ground_truth)
        ver_by = _split_by_image(verified)
        empty = np.zeros((0, 7))
        for image in images:
            g = gt_by.get(image, empty)
            d = det_by.get(image)
            acc.add_image(
                ImageGroundTruth(
                    labels=g[:, 1].astype(np.int64),
                    boxes=g[:, 2:6],
                    group_of=g[:, 6] > 0.5,
                    verified=ver_by.get(image, np.zeros((0, 2)))[:, 1].astype(np.int64),
                ),
                None
                if d is None
                else ImageDetections(labels=d[:, 1].astype(np.int64), scores=d[:, 2], boxes=d[:, 3:7]),
            )
        mean_ap, ap = acc.compute()
        out = {"map": torch.tensor(mean_ap, dtype=torch.float64)}
        for c in np.flatnonzero(~np.isnan(ap)):
            out[f"ap/{c}"] = torch.tensor(ap[c], dtype=torch.float64)
        return out


def _split_by_image(table: np.ndarray) -> dict[float, np.ndarray]:
    """{sample id: its rows}, rows kept in their stored order (the official per-image order)."""
    if len(table) == 0:
        return {}
    order = np.argsort(table[:, 0], kind="stable")
    table = table[order]
    ids, starts = np.unique(table[:, 0], return_index=True)
    return dict(zip(ids, np.split(table, starts[1:])))


class OpenImagesChallengeMaskMAP(PerSampleMetric):
    """Open Images Challenge 2019 instance-segmentation mAP at mask IoU 0.5 (tensorflow/models
    research/object_detection ``OpenImagesChallengeEvaluator(evaluate_masks=True)``, as run by
    metrics/oid_challenge_evaluation.py; rules in ``protocol.match_masks_class_in_image``): the
    detection protocol with mask IoU, boxes without a mask (all-False ``masks`` row) are regions where
    detections are ignored and are no ground truth, group-of boxes with a mask count
    ``group_of_weight``.

    ``update(image_ids, preds, targets)``: ``preds[i]`` has ``labels`` (n,), ``scores`` (n,), ``masks``
    (n, H, W) bool; ``targets[i]`` has ``labels`` (m,), ``boxes`` (m, 4; x1 y1 x2 y2 in pixels of the
    H x W grid), ``masks`` (m, H, W) bool, ``group_of`` (m,), ``verified`` (k,) class ids of the verified
    image labels. Ground truth expanded over the hierarchy beforehand, as for
    :class:`OpenImagesChallengeMAP`. Matching is per image, so ``update`` matches and stores only
    (class, score, TP) rows and per-class counts: no masks are kept or gathered across processes.
    ``compute()`` returns ``{"map": mAP, "ap/<class id>": AP}`` for the classes with ground truth."""

    def __init__(self, num_classes: int, iou_threshold: float = 0.5, group_of_weight: float = 1.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.iou_threshold = float(iou_threshold)
        self.group_of_weight = float(group_of_weight)
        self.add_table("matches", width=3)  # class, score, TP weight
        self.add_table("ground_truth", width=2)  # class, count

    def _protocol(self) -> SegmentationAccumulator:
        return SegmentationAccumulator(self.num_classes, self.iou_threshold, self.group_of_weight)

    def update(
        self, image_ids: Sequence[int], preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        tag = self.new_tag()
        protocol = self._protocol()
        for image_id, pred, target in zip(image_ids, preds, targets):
            gt_masks = _numpy(target["masks"]).astype(bool)
            det_masks = _numpy(pred["masks"]).astype(bool)
            height, width = _grid(gt_masks, det_masks, image_id)
            gt = ImageMaskGroundTruth(
                labels=_numpy(target["labels"]).astype(np.int64).reshape(-1),
                boxes=_numpy(target["boxes"]).astype(np.float64).reshape(-1, 4) / [width, height, width, height],
                group_of=_numpy(target["group_of"]).astype(bool).reshape(-1),
                masks=gt_masks.reshape(-1, height, width),
                verified=_numpy(target["verified"]).astype(np.int64).reshape(-1),
            )
            det = ImageMaskDetections(
                labels=_numpy(pred["labels"]).astype(np.int64).reshape(-1),
                scores=_numpy(pred["scores"]).astype(np.float64).reshape(-1),
                masks=det_masks.reshape(-1, height, width),
            )
            counts = protocol.count_ground_truth(gt)
            present = np.flatnonzero(counts)
            self.append_rows("ground_truth", int(image_id), np.stack([present, counts[present]], 1), tag)
            rows = [np.stack([np.full(len(s), c), s, t], 1) for c, s, t in protocol.match_image(gt, det)]
            self.append_rows("matches", int(image_id), np.concatenate(rows) if rows else np.zeros((0, 3)), tag)

    def compute(self) -> dict[str, torch.Tensor]:
        matches, ground_truth = self.tables("matches", "ground_truth")
        protocol = self._protocol()
        protocol.num_gt += np.bincount(
            ground_truth[:, 1].astype(np.int64), weights=ground_truth[:, 2], minlength=self.num_classes
        )[: self.num_classes]
        matches = matches[np.argsort(matches[:, 0], kind="stable")]  # image order, each image's own order kept
        for c in np.unique(matches[:, 1]).astype(np.int64):
            rows = matches[matches[:, 1] == c]
            protocol._scores[c].append(rows[:, 2])
            protocol._tp[c].append(rows[:, 3])
        mean_ap, ap = protocol.compute()
        out = {"map": torch.tensor(mean_ap, dtype=torch.float64)}
        for c in np.flatnonzero(~np.isnan(ap)):
            out[f"ap/{c}"] = torch.tensor(ap[c], dtype=torch.float64)
        return out


def _grid(gt_masks: np.ndarray, det_masks: np.ndarray, image_id: Any) -> tuple[int, int]:
    """(H, W) shared by an image's masks (an empty stack may carry any size); no mask: (1, 1)."""
    grids = {m.shape[-2:] for m in (gt_masks, det_masks) if m.ndim == 3 and len(m)}
    if len(grids) > 1:
        raise ValueError(f"image {image_id}: predicted and ground-truth masks differ in size ({sorted(grids)})")
    if grids:
        return grids.pop()
    return next((m.shape[-2:] for m in (gt_masks, det_masks) if m.ndim == 3), (1, 1))


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
