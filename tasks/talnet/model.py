"""TALNet (Chao et al., "Rethinking the Faster R-CNN Architecture for Temporal Action
Localization", CVPR 2018): per modality, a 1D temporal feature map, a multi-tower segment proposal
network whose towers' receptive fields match their anchor scales (with context), and a segment
classifier over SoI-pooled, context-extended features. Modalities are fused late (the paper's
scheme and a proposal-union variant, in ``module.py``) or early (one stream over both)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tasks.talnet.anchors import extend_with_context

DILATION_RULES = ("exact", "paper")


def aligned_dilation(scale: float, context_ratio: float, rule: str = "exact") -> int:
    """Dilation d of the SPN tower for anchors of ``scale`` snippets (TALNet Sec. 3.1-3.2).

    The tower is a stride-1 max pool of kernel d (it fills the holes of the dilated convolutions)
    then two k=3 convolutions dilated by d: its receptive field is 5d snippets. The paper ties the
    dilation rate to the anchor scale and doubles it when context is used, so that the receptive
    field covers the anchor plus its context (s/2 on each side, i.e. 2s). Its rate is s/6 without
    context and 2s/6 with it (``rule="paper"``: 5s/6 and 5s/3, about 17 % short of s and 2s);
    ``rule="exact"`` (the default) picks d = round(s (1 + 2 context_ratio) / 5), so that 5d equals
    the context-extended anchor. NOTE: the paper's text could not be re-read where this was written
    (only its abstract was reachable); the s/6 rate is quoted from memory of Sec. 3.1."""
    if rule not in DILATION_RULES:
        raise ValueError(f"dilation rule must be one of {DILATION_RULES}, not {rule!r}")
    if rule == "paper":
        return max(1, round(scale * (2 if context_ratio > 0 else 1) / 6))
    return max(1, round(scale * (1 + 2 * context_ratio) / 5))


def tower_receptive_field(dilation: int) -> int:
    """Receptive field in snippets of one tower: pool kernel d, plus 2d for each dilated conv."""
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

    def __init__(
        self,
        channels: int,
        scales: Sequence[float],
        context_ratio: float,
        dilation_rule: str = "exact",
    ):
        super().__init__()
        self.scales = [float(s) for s in scales]
        self.towers = nn.ModuleList(
            ReceptiveFieldAlignedTower(channels, aligned_dilation(s, context_ratio, dilation_rule)) for s in self.scales
        )
        self.heads = nn.ModuleList(nn.Conv1d(channels, 3, 1) for _ in self.scales)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, T) and mask (B, T) -> objectness logits (B, S, T) and deltas (B, S, T, 2)."""
        m = mask[:, None].to(x.dtype)
        out = torch.stack([head(tower(x, m)) for tower, head in zip(self.towers, self.heads)], dim=1)
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
        dilation_rule: str = "exact",
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
        self.spn = SegmentProposalNetwork(hidden_dim, anchor_scales, context_ratio, dilation_rule)
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
    """One ``TALNetStream`` per input: per modality (late fusion) or one over the concatenated
    modalities (early fusion)."""

    def __init__(self, streams: dict[str, TALNetStream]):
        super().__init__()
        self.streams = nn.ModuleDict(streams)

    @property
    def modalities(self) -> list[str]:
        return list(self.streams)
