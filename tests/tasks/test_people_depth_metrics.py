"""Table 2's errors (public compute_si_rmse / rmse / rel) against hand-worked frames and brute force."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch

from tasks.people_depth.metrics import (
    REGIONS,
    ScaleAlignedRel,
    ScaleAlignedRMSE,
    ScaleInvariantRMSE,
    scale_aligned_errors,
    scale_invariant_rmse,
)
from tests.ddp import DDPCase


def _frame():
    """One 1x4 frame: log errors d = [0, 0, 1, 1] (gt 1 everywhere), the last two pixels human."""
    target = torch.ones(1, 1, 1, 4)
    pred = torch.exp(torch.tensor([0.0, 0.0, 1.0, 1.0])).view(1, 1, 1, 4)
    human = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    return pred, target, human


# Worked by hand from the definitions (N = 4, |H| = |E| = 2; eps = 1e-6):
# full: MSE_M = 2/4 - (2/4)^2 = 0.25 -> sqrt(2 * 0.25) = sqrt(0.5) (eps changes it by < 1e-6).
# env: d = 0 on the region -> 0. intra: d = 1 on both human pixels, so the public N = 2 + eps leaves
#      MSE_M = 2/N - 4/N^2 = 2 eps / N^2, not 0 -> sqrt(4 eps) / N = 1e-3 (the public code's bias).
# hum: pairs (i in H, j in P): each human pixel differs from the 2 environment pixels by 1 ->
#      sum = 2 * 2 = 4 over |H| |P| = 8 -> sqrt(0.5).
# inter: pairs (i in H, j in E): 4 pairs, each 1 -> sum 4 over 4 -> 1.
EPS = 1e-6
EXPECTED = {
    "full": math.sqrt(0.5),
    "env": 0.0,
    "intra": math.sqrt(4 * EPS) / (2 + EPS),
    "hum": math.sqrt(0.5),
    "inter": 1.0,
}


@pytest.mark.parametrize("region", REGIONS)
def test_hand_worked_frame(region):
    metric = ScaleInvariantRMSE(region)
    metric.update(*_frame())
    assert metric.compute().item() == pytest.approx(EXPECTED[region], rel=1e-5, abs=1e-7)


def test_second_hand_worked_frame_with_a_hole():
    """d = [0, 2, 1, *, 3] with the 4th pixel unknown, pixels 3 and 5 human (H = {1, 3}, E = {0, 2})."""
    target = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0]).view(1, 1, 1, 5)
    pred = torch.exp(torch.tensor([0.0, 2.0, 1.0, 5.0, 3.0])).view(1, 1, 1, 5)
    human = torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]).view(1, 1, 1, 5)
    # full: d = 0, 2, 1, 3: sum 6, squares 14 -> MSE_M = 14/4 - 9/4 = 1.25 -> sqrt(2.5).
    # env: d = 0, 2 -> MSE_M = 2 - 1 = 1 -> sqrt(2). intra: d = 1, 3 -> 5 - 4 = 1 -> sqrt(2).
    # hum: i = 1: (1-0)^2 + (1-2)^2 + 0 + (1-3)^2 = 6; i = 3: 9 + 1 + 4 + 0 = 14 -> 20 / 8 -> sqrt(2.5).
    # inter: i = 1: 1 + 1 = 2; i = 3: 9 + 1 = 10 -> 12 / 4 -> sqrt(3).
    expected = {
        "full": math.sqrt(2.5),
        "env": math.sqrt(2.0),
        "intra": math.sqrt(2.0),
        "hum": math.sqrt(2.5),
        "inter": math.sqrt(3.0),
    }
    for region, value in expected.items():
        assert scale_invariant_rmse(pred, target, human, region)[0].item() == pytest.approx(value, rel=1e-6), region


def test_pixel_pairs_by_brute_force():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 5, 6, generator=g) + 0.5
    pred = torch.rand(1, 1, 5, 6, generator=g) + 0.5
    target[0, 0, 0, :2] = 0  # unknown depth
    human = (torch.rand(1, 1, 5, 6, generator=g) > 0.6).float()
    d = (pred.log() - target.clamp_min(1e-9).log()).flatten().double()
    valid = target.flatten() > 0
    h = human.flatten() > 0.5
    # si-full/env/intra = sqrt(2 MSE_M) = sqrt(mean over ordered pairs of M x M of (d_i - d_j)^2).
    pairs = {
        "full": (valid, valid, 1.0),
        "env": (valid & ~h, valid & ~h, 1.0),
        "intra": (valid & h, valid & h, 1.0),
        "hum": (valid & h, valid, 1.0),
        "inter": (valid & h, valid & ~h, 1.0),
    }
    for region, (a, b, _) in pairs.items():
        diffs = (d[a][:, None] - d[b][None, :]) ** 2
        expected = math.sqrt(diffs.sum().item() / diffs.numel())
        got = scale_invariant_rmse(pred, target, human, region)[0].item()
        assert got == pytest.approx(expected, rel=1e-5), region


def test_scale_invariance_and_frames_averaged():
    pred, target, human = _frame()
    metric = ScaleInvariantRMSE("full")
    metric.update(pred * 7.0, target, human)  # a global scale changes nothing (up to the eps terms)
    metric.update(target.clone(), target, human)  # a perfect frame: 0
    assert metric.compute().item() == pytest.approx(math.sqrt(0.5) / 2, rel=1e-5)


def test_frame_without_people_counts_as_zero_like_the_public_code_or_is_skipped():
    pred, target, human = _frame()
    no_people = torch.zeros_like(human)
    public = ScaleInvariantRMSE("inter")
    public.update(pred, target, human)
    public.update(pred, target, no_people)
    assert public.compute().item() == pytest.approx(0.5, abs=1e-6)  # (1 + 0) / 2 frames
    skipping = ScaleInvariantRMSE("inter", skip_empty_frames=True)
    skipping.update(pred, target, human)
    skipping.update(pred, target, no_people)
    assert skipping.compute().item() == pytest.approx(1.0, abs=1e-6)
    empty = ScaleInvariantRMSE("hum", skip_empty_frames=True)
    empty.update(pred, target, no_people)
    with pytest.raises(ValueError, match="si-hum: no frame"):
        empty.compute()


def test_rmse_and_rel_after_least_squares_scale():
    """gt = [1, 2, 4], pred = [1, 1, 2] (4th pixel unknown): s = (1 + 2 + 8) / (1 + 1 + 4) = 11/6."""
    target = torch.tensor([1.0, 2.0, 4.0, 0.0]).view(1, 1, 1, 4)
    pred = torch.tensor([1.0, 1.0, 2.0, 9.0]).view(1, 1, 1, 4)
    s = 11.0 / 6.0
    residuals = [1 - s, 2 - s, 4 - 2 * s]
    expected_rmse = math.sqrt(sum(r * r for r in residuals) / 3)
    expected_rel = (abs(residuals[0]) / 1 + abs(residuals[1]) / 2 + abs(residuals[2]) / 4) / 3
    rmse, rel, has = scale_aligned_errors(pred, target)
    assert rmse.item() == pytest.approx(expected_rmse, rel=1e-5) and rel.item() == pytest.approx(expected_rel, rel=1e-5)
    assert has.item()
    for cls, value in ((ScaleAlignedRMSE, expected_rmse), (ScaleAlignedRel, expected_rel)):
        metric = cls()
        metric.update(pred * 3.0, target, torch.zeros_like(target))  # scale-aligned: a scale changes nothing
        metric.update(target.clone(), target, torch.zeros_like(target))  # perfect: 0
        assert metric.compute().item() == pytest.approx(value / 2, rel=1e-5)


def test_repeated_sample_ids_count_once():
    """A frame a DistributedSampler repeats (same data-set index) is averaged once."""
    pred, target, human = _frame()
    metric = ScaleInvariantRMSE("full")
    metric.update(pred, target, human, torch.tensor([0]))
    metric.update(target.clone(), target, human, torch.tensor([1]))
    metric.update(pred, target, human, torch.tensor([0]))  # padding repeat
    assert metric.compute().item() == pytest.approx(math.sqrt(0.5) / 2, abs=1e-6)


def test_unknown_region_is_refused():
    with pytest.raises(ValueError, match="unknown region"):
        ScaleInvariantRMSE("people")


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_batches() -> list[tuple]:
    """(pred depth, ground truth with holes = 0, human mask) images of different batch sizes."""
    g = torch.Generator().manual_seed(2)
    out = []
    for n in (2, 1, 3, 2, 1):
        gt = 1.0 + 4.0 * torch.rand(n, 1, 12, 16, generator=g)
        gt[torch.rand(n, 1, 12, 16, generator=g) < 0.2] = 0.0
        pred = gt * torch.exp(0.3 * torch.randn(n, 1, 12, 16, generator=g)) + 0.05
        human = torch.zeros(n, 1, 12, 16)
        human[:, :, 3:9, 4:10] = 1.0
        out.append((pred, gt, human))
    return out


def _ddp_batches_with_ids() -> list[tuple]:
    """The same frames with their data-set indices, so padded repeats are recognised (count once)."""
    out, start = [], 0
    for pred, gt, human in _ddp_batches():
        out.append((pred, gt, human, torch.arange(start, start + len(pred))))
        start += len(pred)
    return out


DDP_CASES = {
    **{
        f"people_depth/si_{region}": DDPCase(
            partial(ScaleInvariantRMSE, region=region), _ddp_batches, covers=(ScaleInvariantRMSE,)
        )
        for region in ("full", "env", "hum", "intra", "inter")
    },
    "people_depth/si_hum_padded": DDPCase(
        partial(ScaleInvariantRMSE, region="hum"), _ddp_batches_with_ids, padded=True, covers=(ScaleInvariantRMSE,)
    ),
    **{
        f"people_depth/{cls.__name__}": DDPCase(cls, _ddp_batches_with_ids, padded=True, covers=(cls,))
        for cls in (ScaleAlignedRMSE, ScaleAlignedRel)
    },
}
