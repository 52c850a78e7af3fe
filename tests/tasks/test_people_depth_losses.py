"""Losses of the people-depth network: invariance to a global depth scale, weighting, smoothness."""

from __future__ import annotations

import math

import pytest
import torch

from tasks.people_depth.losses import edge_aware_smoothness, gradient_loss, scale_invariant_loss


def _depths(seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 1, 16, 20, generator=g) * 4 + 1
    pred_log = torch.log(target) + 0.3 * torch.randn(2, 1, 16, 20, generator=g)
    return pred_log, target


@pytest.mark.parametrize("scale", [0.01, 0.5, 7.0, 300.0])
def test_scale_invariant_loss_ignores_a_global_depth_scale(scale):
    pred_log, target = _depths()
    weight = torch.rand_like(target)
    base = scale_invariant_loss(pred_log, target, weight)
    assert base > 0.01
    assert scale_invariant_loss(pred_log + math.log(scale), target, weight) == pytest.approx(base.item(), abs=1e-5)
    assert scale_invariant_loss(pred_log, target * scale, weight) == pytest.approx(base.item(), abs=1e-5)
    assert gradient_loss(pred_log + math.log(scale), target, weight) == pytest.approx(
        gradient_loss(pred_log, target, weight).item(), rel=1e-5)


def test_scale_invariant_loss_is_weighted_variance_of_log_error():
    target = torch.ones(1, 1, 1, 4)
    pred_log = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    assert scale_invariant_loss(pred_log, target, torch.ones_like(target)) == pytest.approx(0.25)
    weight = torch.tensor([1.0, 1.0, 2.0, 0.0]).view(1, 1, 1, 4)  # mean 0.5, E[R^2] 0.5 -> 0.25
    assert scale_invariant_loss(pred_log, target, weight) == pytest.approx(0.25)
    weight = torch.tensor([3.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4)  # mean 0.25, E[R^2] 0.25 -> 0.1875
    assert scale_invariant_loss(pred_log, target, weight) == pytest.approx(0.1875)
    assert scale_invariant_loss(torch.zeros_like(target), target, torch.ones_like(target)) == 0.0


def test_pixels_without_depth_or_weight_do_not_count():
    pred_log, target = _depths(1)
    weight = torch.ones_like(target)
    weight[..., :8, :] = 0
    changed = pred_log.clone()
    changed[..., :8, :] += torch.randn_like(changed[..., :8, :])
    assert scale_invariant_loss(changed, target, weight) == pytest.approx(scale_invariant_loss(pred_log, target, weight).item())
    holes = target.clone()
    holes[..., :8, :] = 0
    assert scale_invariant_loss(changed, holes, torch.ones_like(target)) == pytest.approx(
        scale_invariant_loss(pred_log, target, weight).item())


def test_gradient_loss_is_zero_for_a_correct_shape_and_positive_otherwise():
    pred_log, target = _depths(2)
    weight = torch.ones_like(target)
    assert gradient_loss(torch.log(target) + 1.3, target, weight) == pytest.approx(0.0, abs=1e-6)
    assert gradient_loss(pred_log, target, weight) > 0.1


def test_smoothness_is_zero_on_planes_and_weaker_across_image_edges():
    xs = torch.arange(32.0).view(1, 1, 1, 32).expand(1, 1, 24, 32)
    plane = 0.05 * xs + 0.02 * torch.arange(24.0).view(1, 1, 24, 1)
    flat_image = torch.zeros(1, 3, 24, 32)
    assert edge_aware_smoothness(plane, flat_image) == pytest.approx(0.0, abs=1e-5)
    step = (xs >= 16).float()  # a depth discontinuity at column 16
    edged_image = step.expand(1, 3, 24, 32) * 5.0  # the image has an edge at the same place
    assert edge_aware_smoothness(step, edged_image) < 0.5 * edge_aware_smoothness(step, flat_image)
