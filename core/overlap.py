"""Overlap measures in NumPy alone (no torch): temporal IoU of segments and IoU of boxes.

The one implementation of each; ``core.metrics`` re-exports them with a torch-tensor path for
training code, and scoring commands (``python -m tasks.talnet.evaluate``) import this module so
they stay free of torch."""

from __future__ import annotations

from typing import Any

import numpy as np


def temporal_iou(a: Any, b: Any, zero_union: float | None = 0.0) -> np.ndarray:
    """Temporal IoU of every segment of ``a`` (N, 2: start, end) with every one of ``b`` (M, 2),
    as a float64 (N, M) matrix.

    The ActivityNet evaluator's ``segment_iou`` (Evaluation/utils.py) arithmetic, bit for bit::

        tt1 = np.maximum(target_segment[0], candidate_segments[:, 0])
        tt2 = np.minimum(target_segment[1], candidate_segments[:, 1])
        segments_intersection = (tt2 - tt1).clip(0)
        segments_union = (candidate_segments[:, 1] - candidate_segments[:, 0]) \\
            + (target_segment[1] - target_segment[0]) - segments_intersection
        tIoU = segments_intersection.astype(float) / segments_union

    ``zero_union`` is what a union that is not positive (two zero-length segments) gives: 0 by
    default; ``None`` keeps the official quotient (0/0 = NaN, which the official matching lets
    through as it is never ``< threshold``)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = (np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    if zero_union is None:
        return iou
    return np.where(union > 0, iou, zero_union)


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU of every box of ``a`` (N, 4: x1, y1, x2, y2) with every one of ``b`` (M, 4), as a float64
    (N, M) matrix: continuous coordinates (no +1 on widths, as in COCO); a zero union gives 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)
