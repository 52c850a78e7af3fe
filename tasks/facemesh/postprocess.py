"""Detector post-processing: weighted non-maximum suppression (BlazeFace Sec. 3, "tie resolution")."""

from __future__ import annotations

import numpy as np
import torch

from core.overlap import box_iou

MAX_DETECTIONS = 100


def candidates(scores: torch.Tensor, threshold: float, max_count: int = MAX_DETECTIONS) -> torch.Tensor:
    """Indices of the (at most ``max_count``) highest scores >= ``threshold``, best first."""
    keep = torch.nonzero(scores >= threshold).squeeze(1)
    return keep[torch.argsort(scores[keep], descending=True)[:max_count]]


def weighted_nms(
    boxes: torch.Tensor, keypoints: torch.Tensor, scores: torch.Tensor, iou_threshold: float = 0.3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Blend overlapping detections instead of discarding them.

    Repeatedly take the highest-scoring remaining detection and every remaining detection whose box
    overlaps it with IoU > ``iou_threshold`` (itself included); output their score-weighted mean box
    and keypoints with the top detection's score, and remove them all. This is the weighted NMS of
    BlazeFace (and MediaPipe's ``WEIGHTED`` overlap mode), which the paper found makes boxes steadier
    across video frames than plain NMS. Inputs: boxes (K, 4) xyxy, keypoints (K, P, 2), scores (K,).
    Returns the blended (boxes, keypoints, scores) sorted by score."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4), keypoints.reshape(0, *keypoints.shape[1:]), scores.reshape(0)
    out = blend_overlaps(*(t.detach().cpu().double().numpy() for t in (boxes, keypoints, scores)), iou_threshold)
    return tuple(torch.from_numpy(a).to(boxes.device, boxes.dtype) for a in out)


def blend_overlaps(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.3
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`weighted_nms` on NumPy arrays (a handful of candidates per image: NumPy's small-array calls
    cost a fraction of torch's per-op overhead, which dominated the detector's post-processing)."""
    if len(scores) == 0:
        return boxes.reshape(0, 4), keypoints.reshape(0, *keypoints.shape[1:]), scores.reshape(0)
    order = np.argsort(-scores, kind="stable")
    b, k, s = boxes[order], keypoints[order], scores[order]
    iou = box_iou(b, b)
    remaining = np.ones(len(s), bool)
    weights, top = [], []
    for i in range(len(s)):
        if not remaining[i]:
            continue
        group = remaining & (iou[i] > iou_threshold)
        group[i] = True
        weights.append(np.where(group, s, 0.0) / s[group].sum())
        top.append(i)
        remaining &= ~group
    w = np.stack(weights)
    return w @ b, (w @ k.reshape(len(s), -1)).reshape(len(w), *k.shape[1:]), s[top]
