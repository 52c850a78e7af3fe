"""Detector post-processing: weighted non-maximum suppression (BlazeFace Sec. 3, "tie resolution")."""

from __future__ import annotations

import torch
from torchvision.ops import box_iou

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
    order = torch.argsort(scores, descending=True)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    iou = box_iou(boxes, boxes)
    remaining = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    out_b, out_k, out_s = [], [], []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        group = remaining & (iou[i] > iou_threshold)
        group[i] = True
        w = scores[group]
        w = w / w.sum()
        out_b.append((boxes[group] * w[:, None]).sum(0))
        out_k.append((keypoints[group] * w[:, None, None]).sum(0))
        out_s.append(scores[i])
        remaining &= ~group
    return torch.stack(out_b), torch.stack(out_k), torch.stack(out_s)
