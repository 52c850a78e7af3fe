"""The public JointLoss's terms on hand-worked tensors: data (1.5 MSE_M, human variant), the
stride-2 gradient term, first-order and Laplacian smoothness, and their weights per scale."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.people_depth.losses import (
    data_term,
    first_order_smoothness,
    gradient_term_one_scale,
    human_pair_mse,
    joint_loss,
    scale_invariant_mse,
    second_order_smoothness,
)

EPS = 1e-6


def _row(values):
    return torch.tensor(values, dtype=torch.float64).view(1, 1, 1, -1)


def test_data_term_is_one_and_a_half_mse_m_on_the_gt_mask():
    # d = [0, 2, 1, 3] on the mask (the 5th pixel masked): MSE_M = 14/N - 36/N^2, N = 4 + eps.
    pred_log, log_gt = _row([0.0, 2.0, 1.0, 3.0, 9.0]), _row([0.0] * 5)
    mask = _row([1.0, 1.0, 1.0, 1.0, 0.0])
    n = 4 + EPS
    mse = 14 / n - 36 / n**2
    assert scale_invariant_mse(pred_log, log_gt, mask).item() == pytest.approx(mse, rel=1e-12)
    assert data_term(pred_log, log_gt, mask).item() == pytest.approx(1.5 * mse, rel=1e-12)


def test_human_data_term_adds_half_the_halved_human_pair_mean():
    # H = pixels 2, 3 (d = 1, 3); pairs with all 4: i=2: 1+1+0+4 = 6, i=3: 9+1+4+0 = 14 -> 20 / (2*4).
    pred_log, log_gt = _row([0.0, 2.0, 1.0, 3.0]), _row([0.0] * 4)
    mask, human = _row([1.0] * 4), _row([0.0, 0.0, 1.0, 1.0])
    pair = 20 / (8 + EPS) / 2
    assert human_pair_mse(pred_log, log_gt, mask, human).item() == pytest.approx(pair, rel=1e-9)
    n = 4 + EPS
    expected = (14 / n - 36 / n**2) + 0.5 * pair
    assert data_term(pred_log, log_gt, mask, human, human_data_term=True).item() == pytest.approx(expected, rel=1e-9)


def test_gradient_term_takes_differences_two_pixels_apart():
    # One row, R = [0, 1, 4, 9, 16]: |R_i - R_{i+2}| = 4, 8, 12 (all masked in) -> 24 / 3.
    r = _row([0.0, 1.0, 4.0, 9.0, 16.0])
    zeros = torch.zeros_like(r)
    assert gradient_term_one_scale(r, zeros, torch.ones_like(r)).item() == pytest.approx(24 / (3 + EPS), rel=1e-12)
    # Masking pixel 2 removes both pairs that touch it: only |R_1 - R_3| = 8 remains.
    mask = _row([1.0, 1.0, 0.0, 1.0, 1.0])
    assert gradient_term_one_scale(r, zeros, mask).item() == pytest.approx(8 / (1 + EPS), rel=1e-12)
    # Invariant to a global depth scale (a constant added to the log).
    assert gradient_term_one_scale(r + 3.0, zeros, mask).item() == pytest.approx(8 / (1 + EPS), rel=1e-12)


def test_first_order_smoothness_on_a_2x3_patch():
    # D rows [0, 1, 3] and [1, 1, 1]; a flat image (weights 1).
    depth = torch.tensor([[0.0, 1.0, 3.0], [1.0, 1.0, 1.0]], dtype=torch.float64).view(1, 1, 2, 3)
    image = torch.zeros(1, 3, 2, 3, dtype=torch.float64)
    # |dx| top row = [1, 2]; |dy| = [1, 0, 2]; on the shared (1, 2) grid: [1 + 1, 2 + 0] -> mean 2.
    assert first_order_smoothness(depth, image).item() == pytest.approx(2.0, rel=1e-12)
    # An image edge between columns 0 and 1 of strength 1 (all channels) weights that dx by e^-1.
    edged = image.clone()
    edged[..., 1:] = 1.0
    assert first_order_smoothness(depth, edged).item() == pytest.approx((math.exp(-1) + 1 + 2) / 2, rel=1e-12)


def test_laplacian_smoothness_on_a_3x3_patch():
    depth = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    depth[0, 0, 1, 1] = 2.0  # 4 * 2 - 0 = 8 at the only valid pixel
    image = torch.zeros(1, 3, 3, 3, dtype=torch.float64)
    assert second_order_smoothness(depth, image).item() == pytest.approx(8.0, rel=1e-12)
    image[:, :, 1, 1] = 0.5  # image Laplacian 2 in every channel -> weight e^-2
    assert second_order_smoothness(depth, image).item() == pytest.approx(8.0 * math.exp(-2), rel=1e-12)


def test_joint_loss_weights_per_scale():
    g = torch.Generator().manual_seed(0)
    pred_log = torch.randn(2, 1, 48, 64, generator=g, dtype=torch.float64)
    depth = torch.rand(2, 1, 48, 64, generator=g, dtype=torch.float64) + 0.5
    depth[:, :, :4] = 0.0  # unknown
    image = torch.rand(2, 3, 48, 64, generator=g, dtype=torch.float64)
    parts = joint_loss(pred_log, depth, image)
    log_gt = torch.log(torch.where(depth > 0, depth, torch.ones_like(depth)))
    mask = (depth > 0).double()
    grad, smooth = 0.0, 0.0
    for s in range(5):
        k = 2**s
        p, lg, m, im = pred_log[..., ::k, ::k], log_gt[..., ::k, ::k], mask[..., ::k, ::k], image[..., ::k, ::k]
        grad += 0.75 * gradient_term_one_scale(p, lg, m).item()
        smooth += 0.5**s * (0.075 * first_order_smoothness(p, im).item() + 0.1 * second_order_smoothness(p, im).item())
    assert parts["data"].item() == pytest.approx(
        1.5 * scale_invariant_mse(pred_log, log_gt, mask).mean().item(), rel=1e-12
    )
    assert parts["gradient"].item() == pytest.approx(grad, rel=1e-12)
    assert parts["smoothness"].item() == pytest.approx(smooth, rel=1e-12)
    assert parts["total"].item() == pytest.approx(parts["data"].item() + grad + smooth, rel=1e-12)


def test_data_term_ignores_a_global_depth_scale():
    g = torch.Generator().manual_seed(1)
    pred_log = torch.randn(2, 1, 8, 8, generator=g, dtype=torch.float64)
    depth = torch.rand(2, 1, 8, 8, generator=g, dtype=torch.float64) + 0.5
    base = joint_loss(pred_log, depth, torch.zeros(2, 3, 8, 8, dtype=torch.float64))
    scaled = joint_loss(pred_log, depth * 40.0, torch.zeros(2, 3, 8, 8, dtype=torch.float64))
    assert scaled["data"].item() == pytest.approx(base["data"].item(), rel=1e-4)
    assert scaled["gradient"].item() == pytest.approx(base["gradient"].item(), rel=1e-9)
