"""TALNet's segment geometry: multi-scale anchors, Faster R-CNN style boundary encoding of a
segment against a reference, and explicit context extension. Segments are (start, end) in snippet
units: snippet i covers [i, i + 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def anchor_segments(length: int, scales: Sequence[float]) -> torch.Tensor:
    """Anchors (S, T, 2): at every snippet i, one segment per scale s centred on the snippet."""
    centres = torch.arange(length, dtype=torch.float32) + 0.5
    half = torch.as_tensor(list(scales), dtype=torch.float32)[:, None] / 2
    return torch.stack([centres[None] - half, centres[None] + half], dim=-1)


def extend_with_context(segments: torch.Tensor, ratio: float) -> torch.Tensor:
    """Explicit context (TALNet Sec. 3.3): extend a segment by ``ratio`` of its length each side."""
    length = segments[..., 1] - segments[..., 0]
    return torch.stack([segments[..., 0] - ratio * length, segments[..., 1] + ratio * length], dim=-1)


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
