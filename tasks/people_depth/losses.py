"""Training objective of Li et al. (CVPR 2019, Sec. 5), as ``JointLoss.__call__`` in the paper's
public code (google/mannequinchallenge ``models/networks.py``) computes it, on log depth.

    L = L_data + sum_{s=0}^{4} 0.75 L_grad^s + sum_{s=0}^{4} 0.5^s (0.075 L_sm1^s + 0.1 L_sm2^s)

where scale s takes every 2^s-th pixel (``x[..., ::2, ::2]`` applied s times) of the predicted log
depth, the ground truth, its mask and the input image. Tensors here are (B, 1, H, W); ``mask`` is
the ground-truth mask (1 where the MVS depth is known), or a per-pixel weight."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPSILON = 1e-6  # the public code's EPSILON
SCALES = 5
GRADIENT_WEIGHT = 0.75
FIRST_ORDER_WEIGHT = 0.075
SECOND_ORDER_WEIGHT = 0.1
DATA_WEIGHT = 1.5

_LAPLACIAN = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]).view(1, 1, 3, 3)


def log_ground_truth(depth: torch.Tensor) -> torch.Tensor:
    """log d_gt, 0 where unknown (the public loader sets unknown depth to 1 before the log)."""
    return torch.log(torch.where(depth > 1e-8, depth, torch.ones_like(depth)))


def ground_truth_mask(depth: torch.Tensor) -> torch.Tensor:
    return (depth > 1e-8).to(depth.dtype)


def scale_invariant_mse(pred_log: torch.Tensor, log_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per image MSE_M = sum(M d^2) / N - (sum M d)^2 / N^2 with d = log pred - log gt and
    N = sum M + 1e-6 (the public ``Data_Loss``; for a binary mask M d^2 = (M d)^2). (B,)"""
    n = mask.sum(dim=(1, 2, 3)) + EPSILON
    d = (pred_log - log_gt) * mask
    return (d * d).sum(dim=(1, 2, 3)) / n - d.sum(dim=(1, 2, 3)) ** 2 / (n * n)


def human_pair_mse(
    pred_log: torch.Tensor, log_gt: torch.Tensor, mask: torch.Tensor, human_mask: torch.Tensor
) -> torch.Tensor:
    """Per image sum_{i in H} sum_{j in M} (d_i - d_j)^2 / (2 (|H| |M| + 1e-6)), H the human pixels
    with ground truth (the public ``Data_Human_Loss``, which halves the pair mean). (B,)"""
    d = pred_log - log_gt
    dm = d * mask
    n_full = mask.sum(dim=(1, 2, 3), keepdim=True)
    human = human_mask * mask
    per_pixel = (
        n_full * d * d + (dm * dm).sum(dim=(1, 2, 3), keepdim=True) - 2.0 * dm.sum(dim=(1, 2, 3), keepdim=True) * d
    )
    n_human = human.sum(dim=(1, 2, 3))
    return (per_pixel * human).sum(dim=(1, 2, 3)) / (n_human * n_full.flatten() + EPSILON) / 2.0


def data_term(
    pred_log: torch.Tensor,
    log_gt: torch.Tensor,
    mask: torch.Tensor,
    human_mask: torch.Tensor | None = None,
    human_data_term: bool = False,
) -> torch.Tensor:
    """Mean over images of 1.5 MSE_M (the public default), or with ``human_data_term`` (their
    ``--human_data_term 1``) of MSE_M + 0.5 * human_pair_mse."""
    if human_data_term:
        if human_mask is None:
            raise ValueError("human_data_term needs the human mask")
        per_image = scale_invariant_mse(pred_log, log_gt, mask) + 0.5 * human_pair_mse(
            pred_log, log_gt, mask, human_mask
        )
    else:
        per_image = DATA_WEIGHT * scale_invariant_mse(pred_log, log_gt, mask)
    return per_image.mean()


def gradient_term_one_scale(pred_log: torch.Tensor, log_gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum |R_i - R_{i+2}| M_i M_{i+2} over rows and columns / (sum of those mask products + 1e-6),
    R = log pred - log gt, over the whole batch (the public ``GradientLoss``: differences two
    pixels apart)."""
    r = pred_log - log_gt
    v_mask = mask[..., :-2, :] * mask[..., 2:, :]
    h_mask = mask[..., :, :-2] * mask[..., :, 2:]
    v = ((r[..., :-2, :] - r[..., 2:, :]).abs() * v_mask).sum()
    h = ((r[..., :, :-2] - r[..., :, 2:]).abs() * h_mask).sum()
    return (v + h) / (v_mask.sum() + h_mask.sum() + EPSILON)


def first_order_smoothness(pred_log: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """mean( |dD/dx| exp(-mean_c |dI/dx|) + |dD/dy| exp(-mean_c |dI/dy|) ) over the (H-1, W-1)
    grid both differences share (the public ``compute_image_aware_1st_smoothness_cost``)."""
    dx = (pred_log[..., :, 1:] - pred_log[..., :, :-1]).abs()[:, 0]
    dy = (pred_log[..., 1:, :] - pred_log[..., :-1, :]).abs()[:, 0]
    wx = torch.exp(-(image[..., :, 1:] - image[..., :, :-1]).abs().mean(1))
    wy = torch.exp(-(image[..., 1:, :] - image[..., :-1, :]).abs().mean(1))
    return ((dx * wx)[:, :-1, :] + (dy * wy)[:, :, :-1]).mean()


def _laplacian_abs(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    kernel = _LAPLACIAN.to(dtype=x.dtype, device=x.device)
    return F.conv2d(x.reshape(b * c, 1, h, w), kernel).abs().reshape(b, c, h - 2, w - 2)


def second_order_smoothness(pred_log: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """mean( exp(-mean_c |lap I|) |lap D| ) with lap the 4-neighbour Laplacian [[0,-1,0],[-1,4,-1],
    [0,-1,0]] on valid pixels (the public ``LaplacianSmoothnessLoss``)."""
    return (torch.exp(-_laplacian_abs(image).mean(1)) * _laplacian_abs(pred_log)[:, 0]).mean()


def _pyramid(x: torch.Tensor, scales: int) -> list[torch.Tensor]:
    out = [x]
    for _ in range(scales - 1):
        out.append(out[-1][..., ::2, ::2])
    return out


def joint_loss(
    pred_log: torch.Tensor,
    depth: torch.Tensor,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    human_mask: torch.Tensor | None = None,
    human_data_term: bool = False,
    scales: int = SCALES,
    gradient_weight: float = GRADIENT_WEIGHT,
    first_order_weight: float = FIRST_ORDER_WEIGHT,
    second_order_weight: float = SECOND_ORDER_WEIGHT,
) -> dict[str, torch.Tensor]:
    """The public objective's three terms and their sum (``total``). ``depth`` is the ground truth
    (0 where unknown), ``image`` the RGB input in [0, 1], ``mask`` the per-pixel weight (default the
    ground-truth mask); weights per scale: gradient ``gradient_weight``, smoothness
    ``first_order_weight`` and ``second_order_weight`` times 0.5^s."""
    log_gt = log_ground_truth(depth)
    mask = ground_truth_mask(depth) if mask is None else mask
    parts = {"data": data_term(pred_log, log_gt, mask, human_mask, human_data_term)}
    preds, gts, masks, images = (_pyramid(t, scales) for t in (pred_log, log_gt, mask, image))
    parts["gradient"] = sum(gradient_weight * gradient_term_one_scale(p, g, m) for p, g, m in zip(preds, gts, masks))
    smooth = pred_log.new_zeros(())
    for s, (p, im) in enumerate(zip(preds, images)):
        if min(p.shape[-2:]) < 3:
            break
        smooth = smooth + 0.5**s * (
            first_order_weight * first_order_smoothness(p, im) + second_order_weight * second_order_smoothness(p, im)
        )
    parts["smoothness"] = smooth
    parts["total"] = parts["data"] + parts["gradient"] + parts["smoothness"]
    return parts
