"""TALNet (Chao et al., "Rethinking the Faster R-CNN Architecture for Temporal Action
Localization", CVPR 2018): per modality, a 1D temporal feature map, a multi-tower segment proposal
network whose towers' receptive fields match their anchor scales (with context), and a segment
classifier over SoI-pooled, context-extended features. Modalities are fused late."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tasks.talnet.postprocess import extend_with_context


def aligned_dilation(scale: float, context_ratio: float) -> int:
    """Dilation d of a tower for anchor length ``scale``: the tower (a stride-1 max pool of
    kernel d, then two k=3 convolutions dilated by d) sees 5d snippets, matched to the anchor
    extended by its context on both sides, ``scale * (1 + 2 * context_ratio)`` (Sec. 3.2-3.3)."""
    return max(1, round(scale * (1 + 2 * context_ratio) / 5))


def tower_receptive_field(dilation: int) -> int:
    return 5 * dilation


class ReceptiveFieldAlignedTower(nn.Module):
    """One SPN tower: max pool (kernel d, smooths the holes of the dilated convs), then two
    temporal convolutions with dilation d; length-preserving."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.dilation = dilation
        self.conv1 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``mask`` (B, 1, T) zeroes every layer's padding, so a video's output does not depend
        on how much longer the other videos of its batch are."""
        d = self.dilation
        if d > 1:
            x = F.max_pool1d(F.pad(x, ((d - 1) // 2, d // 2), value=float("-inf")), d, stride=1)
            x = x * mask
        x = F.relu(self.conv1(x)) * mask
        return F.relu(self.conv2(x)) * mask


class SegmentProposalNetwork(nn.Module):
    """Multi-tower SPN: tower k scores the anchor of scale ``scales[k]`` at every snippet
    (objectness logit) and regresses its centre and length."""

    def __init__(self, channels: int, scales: Sequence[float], context_ratio: float):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.towers = nn.ModuleList(
            ReceptiveFieldAlignedTower(channels, aligned_dilation(s, context_ratio))
            for s in self.scales
        )
        self.heads = nn.ModuleList(nn.Conv1d(channels, 3, 1) for _ in self.scales)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) and mask (B, T) -> objectness logits (B, S, T) and deltas (B, S, T, 2)."""
        m = mask[:, None].to(x.dtype)
        out = torch.stack(
            [head(tower(x, m)) for tower, head in zip(self.towers, self.heads)], dim=1
        )
        return out[:, :, 0], out[:, :, 1:].transpose(-1, -2)


def soi_pool(
    features: torch.Tensor,
    batch_index: torch.Tensor,
    segments: torch.Tensor,
    bins: int,
    lengths: torch.Tensor | None = None,
    samples_per_bin: int = 2,
) -> torch.Tensor:
    """SoI pooling, the 1D RoI pooling: split each segment (snippet units) into ``bins`` equal
    bins and max-pool each over linearly interpolated samples of ``features`` (B, C, T); samples
    past a video's end (``lengths``: its real snippets) read its last snippet.
    Returns (N, C, bins)."""
    batch, channels, length = features.shape
    n = len(segments)
    if n == 0:
        return features.new_zeros(0, channels, bins)
    steps = bins * samples_per_bin
    fractions = (torch.arange(steps, dtype=features.dtype, device=features.device) + 0.5) / steps
    starts, ends = segments[:, :1], segments[:, 1:]
    if lengths is None:
        lengths = torch.full((batch,), length, device=features.device)
    last = (lengths.to(batch_index.device)[batch_index] - 1)[:, None]  # (N, 1)
    x = starts + (ends - starts) * fractions[None] - 0.5  # snippet i's centre is at i + 0.5
    x = torch.minimum(x.clamp(min=0), last.to(x.dtype))
    lo = x.floor().long()
    hi = torch.minimum(lo + 1, last)
    w = (x - lo.to(x.dtype))[..., None]
    flat = features.transpose(1, 2).reshape(batch * length, channels)
    base = (batch_index * length)[:, None]
    sampled = flat[base + lo] * (1 - w) + flat[base + hi] * w  # (N, steps, C)
    return sampled.view(n, bins, samples_per_bin, channels).amax(dim=2).transpose(1, 2)


class SegmentClassifier(nn.Module):
    """Classifies context-extended proposals from SoI-pooled features into actions or background
    and refines their boundaries per class."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        bins: int,
        context_ratio: float,
        hidden: int,
        dropout: float,
    ):
        super().__init__()
        self.bins, self.context_ratio, self.num_classes = bins, context_ratio, num_classes
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * bins, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
        )
        self.cls = nn.Linear(hidden, num_classes + 1)  # index num_classes: background
        self.reg = nn.Linear(hidden, num_classes * 2)

    def forward(
        self,
        features: torch.Tensor,
        batch_index: torch.Tensor,
        segments: torch.Tensor,
        lengths: torch.Tensor | None = None,
    ):
        """Logits (N, K+1) and class-specific deltas (N, K, 2) for ``segments`` (N, 2) of videos
        ``batch_index`` with ``lengths`` real snippets."""
        extended = extend_with_context(segments, self.context_ratio)
        pooled = soi_pool(features, batch_index, extended, self.bins, lengths)
        h = self.mlp(pooled)
        return self.cls(h), self.reg(h).view(-1, self.num_classes, 2)


class TALNetStream(nn.Module):
    """Everything TALNet runs on one modality: feature map, SPN, and segment classifier."""

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 128,
        anchor_scales: Sequence[float] = (4, 8, 16, 32, 64, 128),
        context_ratio: float = 0.5,
        soi_bins: int = 8,
        classifier_hidden: int = 256,
        dropout: float = 0.3,
    ):
        super().__init__()
        self.anchor_scales = [float(s) for s in anchor_scales]
        self.feature_map = nn.ModuleList(
            [
                nn.Conv1d(in_dim, hidden_dim, 3, padding=1),
                nn.Conv1d(hidden_dim, hidden_dim, 3, padding=1),
            ]
        )
        self.input_norm = nn.BatchNorm1d(in_dim, affine=False)  # random-init features vary in scale
        self.spn = SegmentProposalNetwork(hidden_dim, anchor_scales, context_ratio)
        self.classifier = SegmentClassifier(
            hidden_dim, num_classes, soi_bins, context_ratio, classifier_hidden, dropout
        )

    def temporal_features(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, D, T) snippet features -> (B, C, T) temporal feature map, zero on padding."""
        m = mask[:, None].to(x.dtype)
        x = self.input_norm(x) * m
        for conv in self.feature_map:
            x = F.relu(conv(x)) * m  # re-masked each layer: no leak from the batch's padding
        return x


class TALNet(nn.Module):
    """Late fusion over modalities: one ``TALNetStream`` per modality."""

    def __init__(self, streams: dict[str, TALNetStream]):
        super().__init__()
        self.streams = nn.ModuleDict(streams)

    @property
    def modalities(self) -> list[str]:
        return list(self.streams)
