"""Losses: anchor matching + focal classification + smooth-L1 box/keypoint regression for the
detector; masked L1 point losses (3D on rendered faces, 2D on annotated contours) + face-flag
cross-entropy for the mesh model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, sigmoid_focal_loss

from tasks.facemesh.anchors import anchors_xyxy, encode


def match_anchors(
    anchors: torch.Tensor,
    boxes: torch.Tensor,
    valid: torch.Tensor,
    positive_iou: float = 0.5,
    negative_iou: float = 0.4,
):
    """SSD matching per image: an anchor is positive for the ground truth it overlaps most when that
    IoU >= ``positive_iou``, and each ground truth also claims its best anchor; anchors with IoU in
    [negative_iou, positive_iou) are ignored. Returns (labels (B, A): 1 pos / 0 neg / -1 ignore,
    matched ground-truth index (B, A))."""
    b, f = valid.shape
    a = anchors.shape[0]
    iou = box_iou(boxes.reshape(-1, 4), anchors_xyxy(anchors)).reshape(b, f, a)
    iou = torch.where(valid[..., None], iou, torch.full_like(iou, -1.0))
    best_iou, best_gt = iou.max(1)  # (B, A)
    labels = torch.zeros(b, a, dtype=torch.long, device=anchors.device)
    labels[best_iou >= negative_iou] = -1
    labels[best_iou >= positive_iou] = 1
    if f:
        best_anchor = iou.argmax(2)  # (B, F)
        bi, fi = torch.nonzero(valid, as_tuple=True)
        ai = best_anchor[bi, fi]
        labels[bi, ai] = 1
        best_gt[bi, ai] = fi
    return labels, best_gt


def detector_loss(
    logits: torch.Tensor,
    regression: torch.Tensor,
    anchors: torch.Tensor,
    boxes: torch.Tensor,
    keypoints: torch.Tensor,
    valid: torch.Tensor,
    coding: str = "ssd",
    input_size: int = 128,
) -> dict[str, torch.Tensor]:
    """Focal loss over anchors (RetinaNet's alpha 0.25, gamma 2) and smooth-L1 on the coded box and
    keypoints of positive anchors, both divided by the number of positives."""
    labels, gt = match_anchors(anchors, boxes, valid)
    pos = labels == 1
    num_pos = pos.sum().clamp_min(1).float()
    cls = sigmoid_focal_loss(logits, pos.float(), alpha=0.25, gamma=2.0, reduction="none")
    cls = (cls * (labels >= 0)).sum() / num_pos
    bi, ai = torch.nonzero(pos, as_tuple=True)
    if len(bi):
        target = encode(boxes[bi, gt[bi, ai]], keypoints[bi, gt[bi, ai]], anchors[ai], coding, input_size)
        reg = F.smooth_l1_loss(regression[bi, ai], target, reduction="sum", beta=1.0 / 9) / num_pos
    else:
        reg = regression.sum() * 0.0
    return {"det_cls": cls, "det_reg": reg}


def mesh_loss(
    points: torch.Tensor, face_logit: torch.Tensor, batch: dict, z_weight: float = 0.5, contour_weight: float = 1.0
) -> dict[str, torch.Tensor]:
    """Mean L1 over the annotated coordinates of face crops: x, y, z of rendered faces (z weighted by
    ``z_weight``), x, y of annotated contour points (weighted by ``contour_weight``); and binary
    cross-entropy of the face flag on every crop."""
    face = batch["face"] > 0.5
    mask = batch["point_mask"] & face[:, None]
    err = (points - batch["points"]).abs()
    xy = err[..., :2].sum(-1)
    z = err[..., 2] * batch["has_z"][:, None]
    per_point = xy + z_weight * z
    sample_weight = torch.where(
        batch["has_z"] > 0.5, torch.ones_like(batch["has_z"]), torch.full_like(batch["has_z"], contour_weight)
    )
    weights = mask.float() * sample_weight[:, None]
    coords = (2 + z_weight * batch["has_z"])[:, None] * mask.float()
    pts = (per_point * weights).sum() / coords.sum().clamp_min(1.0)
    flag = F.binary_cross_entropy_with_logits(face_logit, batch["face"])
    return {"points": pts, "face_flag": flag}
