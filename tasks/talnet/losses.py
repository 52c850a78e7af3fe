"""Training targets and losses of TALNet's two stages (Faster R-CNN recipe in 1D): anchors and
proposals are labelled by tIoU with the ground truth, a balanced sample of them is scored with
cross-entropy, and positives regress their boundaries with a smooth L1 loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.metrics import temporal_iou
from tasks.talnet.anchors import encode_segments


@dataclass
class StageLoss:
    classification: torch.Tensor
    regression: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.classification + self.regression


def balanced_sample(
    positive: torch.Tensor,
    negative: torch.Tensor,
    size: int,
    positive_fraction: float,
    generator=None,
):
    """Indices of at most ``size`` samples, at most ``positive_fraction`` of them positive."""
    pos = torch.nonzero(positive).flatten()
    neg = torch.nonzero(negative).flatten()
    pos = pos[torch.randperm(len(pos), generator=generator).to(pos.device)[: int(size * positive_fraction)]]
    neg = neg[torch.randperm(len(neg), generator=generator).to(neg.device)[: size - len(pos)]]
    return pos, neg


def proposal_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    anchors: torch.Tensor,
    valid: torch.Tensor,
    gt: torch.Tensor,
    positive_iou: float = 0.7,
    negative_iou: float = 0.3,
    sample_size: int = 256,
) -> StageLoss:
    """SPN loss of one video. ``logits`` (S, T), ``deltas`` (S, T, 2), ``anchors`` (S, T, 2),
    ``valid`` (S, T) marks anchors centred on real snippets, ``gt`` (m, 2) in snippet units.
    Positives: tIoU >= ``positive_iou`` or the best anchor of a ground truth; negatives: < ``negative_iou``."""
    flat_anchors, flat_valid = anchors.reshape(-1, 2), valid.reshape(-1)
    flat_logits, flat_deltas = logits.reshape(-1), deltas.reshape(-1, 2)
    if len(gt) == 0:
        positive = torch.zeros_like(flat_valid)
        negative = flat_valid.clone()
        matched = flat_anchors
    else:
        iou = temporal_iou(flat_anchors, gt)
        iou[~flat_valid] = -1
        best, match = iou.max(dim=1)
        positive = best >= positive_iou
        best_anchor_of_gt = iou.argmax(dim=0)
        positive[best_anchor_of_gt[iou.max(dim=0).values > 0]] = True
        negative = (best < negative_iou) & flat_valid & ~positive
        matched = gt[match]
    pos, neg = balanced_sample(positive, negative, sample_size, 0.5)
    picked = torch.cat([pos, neg])
    target = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))]).to(flat_logits)
    cls = F.binary_cross_entropy_with_logits(flat_logits[picked], target) if len(picked) else flat_logits.sum() * 0
    if len(pos):
        reg = F.smooth_l1_loss(flat_deltas[pos], encode_segments(matched[pos], flat_anchors[pos]), beta=1 / 9)
    else:
        reg = flat_deltas.sum() * 0
    return StageLoss(cls, reg)


def classifier_targets(
    rois: torch.Tensor,
    gt: torch.Tensor,
    gt_labels: torch.Tensor,
    num_classes: int,
    foreground_iou: float = 0.5,
    sample_size: int = 64,
    foreground_fraction: float = 0.25,
):
    """Sample RoIs of one video and label them: the matched class where tIoU >= ``foreground_iou``,
    background (``num_classes``) otherwise. Returns (rois, labels, regression targets)."""
    if len(gt) == 0:
        keep = torch.randperm(len(rois), device=rois.device)[:sample_size]
        labels = torch.full((len(keep),), num_classes, dtype=torch.long, device=rois.device)
        return rois[keep], labels, rois.new_zeros(len(keep), 2)
    iou = temporal_iou(rois, gt)
    best, match = iou.max(dim=1)
    foreground = best >= foreground_iou
    pos, neg = balanced_sample(foreground, ~foreground, sample_size, foreground_fraction)
    keep = torch.cat([pos, neg])
    labels = torch.where(foreground[keep], gt_labels[match[keep]], torch.full_like(match[keep], num_classes))
    targets = encode_segments(gt[match[keep]], rois[keep])
    return rois[keep], labels, targets


def classifier_loss(
    logits: torch.Tensor,
    deltas: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    num_classes: int,
) -> StageLoss:
    """Cross-entropy over actions + background; smooth L1 on the true class's deltas of foreground RoIs."""
    cls = F.cross_entropy(logits, labels) if len(labels) else logits.sum() * 0
    fg = labels < num_classes
    if fg.any():
        reg = F.smooth_l1_loss(deltas[fg, labels[fg]], targets[fg], beta=1 / 9)
    else:
        reg = deltas.sum() * 0
    return StageLoss(cls, reg)
