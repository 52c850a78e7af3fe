"""Segment geometry for TALNet: anchors, Faster R-CNN style boundary encoding, context extension,
temporal NMS. Segments are (start, end) in snippet units: snippet i covers [i, i + 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def anchor_segments(length: int, scales: Sequence[float]) -> torch.Tensor:
    """Anchors (S, T, 2): at every snippet i, one segment per scale s centred on the snippet."""
    centres = torch.arange(length, dtype=torch.float32) + 0.5
    half = torch.as_tensor(list(scales), dtype=torch.float32)[:, None] / 2
    return torch.stack([centres[None] - half, centres[None] + half], dim=-1)


def extend_with_context(segments: torch.Tensor, ratio: float) -> torch.Tensor:
    """Explicit context (TALNet Sec. 3.3): extend a segment by ``ratio`` of its length each side."""
    length = segments[..., 1] - segments[..., 0]
    return torch.stack(
        [segments[..., 0] - ratio * length, segments[..., 1] + ratio * length], dim=-1
    )


def encode_segments(segments: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Regression targets of ``segments`` w.r.t. ``reference``: centre shift over length, log length ratio."""
    ref_len = (reference[..., 1] - reference[..., 0]).clamp(min=1e-6)
    ref_ctr = (reference[..., 0] + reference[..., 1]) / 2
    seg_len = (segments[..., 1] - segments[..., 0]).clamp(min=1e-6)
    seg_ctr = (segments[..., 0] + segments[..., 1]) / 2
    return torch.stack([(seg_ctr - ref_ctr) / ref_len, torch.log(seg_len / ref_len)], dim=-1)


def decode_segments(
    deltas: torch.Tensor, reference: torch.Tensor, max_log_ratio: float = math.log(64.0)
) -> torch.Tensor:
    """Inverse of ``encode_segments`` (the log ratio clamped so a wild prediction stays finite)."""
    ref_len = reference[..., 1] - reference[..., 0]
    ctr = (reference[..., 0] + reference[..., 1]) / 2 + deltas[..., 0] * ref_len
    length = ref_len * torch.exp(deltas[..., 1].clamp(max=max_log_ratio))
    return torch.stack([ctr - length / 2, ctr + length / 2], dim=-1)


def segment_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tIoU matrix (N, M) of segments ``a`` (N, 2) and ``b`` (M, 2)."""
    inter = (
        torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])
    ).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-9), torch.zeros_like(union))


def temporal_nms(
    segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None
) -> torch.Tensor:
    """Greedy non-maximum suppression in time: indices of kept segments, best score first."""
    order = torch.argsort(scores, descending=True, stable=True)
    if len(order) == 0:
        return order
    ordered = segments[order].detach().cpu().double().numpy()
    starts, ends = ordered[:, 0], ordered[:, 1]
    lengths = ends - starts
    alive = np.ones(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):  # numpy on the CPU: the loop is short, its steps tiny
        if not alive[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        inter = np.clip(np.minimum(ends[i], ends) - np.maximum(starts[i], starts), 0, None)
        union = lengths[i] + lengths - inter
        alive &= ~(inter > iou_threshold * np.where(union > 0, union, np.inf))
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
