"""Greedy temporal non-maximum suppression of scored segments (proposals and detections)."""

from __future__ import annotations

import torch

from core.metrics import temporal_iou


def temporal_nms(
    segments: torch.Tensor, scores: torch.Tensor, iou_threshold: float, max_keep: int | None = None
) -> torch.Tensor:
    """Indices of the kept segments, best score first: visiting segments by descending score (ties
    in input order), keep one and drop every later one whose tIoU with it exceeds ``iou_threshold``."""
    order = torch.argsort(scores, descending=True, stable=True)
    if len(order) == 0:
        return order
    ordered = segments[order].detach().cpu().double().numpy()
    alive = torch.ones(len(order), dtype=torch.bool).numpy()
    keep = []
    for i in range(len(order)):  # numpy on the CPU: the loop is short, its steps tiny
        if not alive[i]:
            continue
        keep.append(i)
        if max_keep is not None and len(keep) >= max_keep:
            break
        alive &= ~(temporal_iou(ordered[i : i + 1], ordered)[0] > iou_threshold)
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]
