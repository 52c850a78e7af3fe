"""Training losses of Li et al. (CVPR 2019, Sec. 4.3), on log depth and weighted per pixel."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _log_residual(pred_log: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return pred_log - torch.log(target.clamp_min(1e-6))


def scale_invariant_loss(pred_log: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted scale-invariant MSE (Eigen et al. 2014, lambda = 1): per image
    sum(w R^2)/sum(w) - (sum(w R)/sum(w))^2 with R = log d_pred - log d_gt; a global depth scale
    shifts R by a constant and leaves it unchanged. Mean over images with any weight."""
    r = _log_residual(pred_log, target)
    w = weight * (target > 0)
    total = w.sum(dim=(1, 2, 3))
    mean = (w * r).sum(dim=(1, 2, 3)) / total.clamp_min(1e-8)
    loss = (w * r * r).sum(dim=(1, 2, 3)) / total.clamp_min(1e-8) - mean**2
    has = total > 0
    return loss[has].mean() if has.any() else pred_log.sum() * 0.0


def _downsample(x: torch.Tensor, w: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (x, w) if scale == 1 else (x[..., ::scale, ::scale], w[..., ::scale, ::scale])


def gradient_loss(pred_log: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Multi-scale scale-invariant gradient loss (Li & Snavely, MegaDepth 2018): the L1 norm of the
    x and y differences of R at ``scales`` resolutions (subsampled by 2 each), weighted by both
    pixels' weights. Sharpens depth discontinuities; invariant to a global depth scale."""
    r = _log_residual(pred_log, target)
    w = weight * (target > 0)
    loss = pred_log.sum() * 0.0
    for s in range(scales):
        rs, ws = _downsample(r, w, 2**s)
        wx = ws[..., :, 1:] * ws[..., :, :-1]
        wy = ws[..., 1:, :] * ws[..., :-1, :]
        num = (wx * (rs[..., :, 1:] - rs[..., :, :-1]).abs()).sum() + (wy * (rs[..., 1:, :] - rs[..., :-1, :]).abs()).sum()
        loss = loss + num / (wx.sum() + wy.sum()).clamp_min(1e-8)
    return loss


def edge_aware_smoothness(pred_log: torch.Tensor, image: torch.Tensor, scales: int = 4) -> torch.Tensor:
    """Second-order smoothness of log depth, down-weighted at image edges by exp(-|grad I|),
    summed over ``scales`` resolutions: fills regions without supervision smoothly while letting
    depth break where the image does."""
    gray = image.mean(dim=1, keepdim=True)
    d, g = pred_log, gray
    loss = pred_log.sum() * 0.0
    for s in range(scales):
        if s:
            d, g = F.avg_pool2d(d, 2), F.avg_pool2d(g, 2)
        if d.shape[-1] < 3 or d.shape[-2] < 3:
            break
        dxx = (d[..., :, 2:] - 2 * d[..., :, 1:-1] + d[..., :, :-2]).abs()
        dyy = (d[..., 2:, :] - 2 * d[..., 1:-1, :] + d[..., :-2, :]).abs()
        ex = torch.exp(-(g[..., :, 2:] - g[..., :, :-2]).abs())
        ey = torch.exp(-(g[..., 2:, :] - g[..., :-2, :]).abs())
        loss = loss + (dxx * ex).mean() + (dyy * ey).mean()
    return loss
