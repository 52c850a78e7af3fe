"""si-RMSE by region (Li et al. 2019) against hand-worked cases, and the DDP reduction."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tasks.people_depth.metrics import REGIONS, ScaleInvariantRMSE, scale_invariant_rmse


def _case():
    """One 1x4 image: log errors R = [0, 0, 1, 1], the last two pixels human."""
    target = torch.ones(1, 1, 1, 4)
    pred = torch.exp(torch.tensor([0.0, 0.0, 1.0, 1.0])).view(1, 1, 1, 4)
    human = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 1, 4)
    return pred, target, human


# full: std of R = 0.5. env and intra: R constant -> 0. inter: 4 ordered pairs, each (1)^2 ->
# sqrt(4 / 8). hum: (h,h) pairs sum 0 over 4, (h,e)+(e,h) sum 8 over 8 -> sqrt(8 / 24).
EXPECTED = {"full": 0.5, "env": 0.0, "intra": 0.0, "inter": math.sqrt(0.5), "hum": math.sqrt(1 / 3)}


@pytest.mark.parametrize("region", REGIONS)
def test_hand_worked_image(region):
    metric = ScaleInvariantRMSE(region)
    metric.update(*_case())
    assert metric.compute().item() == pytest.approx(EXPECTED[region], abs=1e-6)


def test_pixel_pairs_by_brute_force():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 1, 5, 6, generator=g) + 0.5
    pred = torch.rand(1, 1, 5, 6, generator=g) + 0.5
    target[0, 0, 0, :2] = 0  # unknown depth
    human = (torch.rand(1, 1, 5, 6, generator=g) > 0.6).float()
    r = (pred.log() - target.clamp_min(1e-9).log()).flatten()
    valid = target.flatten() > 0
    h = human.flatten() > 0.5
    members = {"full": (valid, valid), "env": (valid & ~h, valid & ~h), "intra": (valid & h, valid & h),
               "inter": (valid & h, valid & ~h)}
    for region, (a, b) in members.items():
        diffs = (r[a][:, None] - r[b][None, :]) ** 2
        expected = math.sqrt(diffs.sum().item() / (2 * diffs.numel()))
        assert scale_invariant_rmse(pred, target, human, region)[0].item() == pytest.approx(expected, rel=1e-6)
    pairs = [(i, j) for i in range(30) for j in range(30) if valid[i] and valid[j] and (h[i] or h[j])]
    expected = math.sqrt(sum((r[i] - r[j]).item() ** 2 for i, j in pairs) / (2 * len(pairs)))
    assert scale_invariant_rmse(pred, target, human, "hum")[0].item() == pytest.approx(expected, rel=1e-6)


def test_scale_invariant_and_averaged_per_image():
    pred, target, human = _case()
    metric = ScaleInvariantRMSE("full")
    metric.update(pred * 40.0, target, human)  # a global scale changes nothing: 0.5
    metric.update(target * 3.0, target, human)  # a perfect prediction up to scale: 0
    assert metric.compute().item() == pytest.approx(0.25)


def test_images_without_people_are_left_out_of_human_regions_and_none_raises():
    pred, target, human = _case()
    metric = ScaleInvariantRMSE("hum")
    metric.update(pred, target, torch.zeros_like(human))
    with pytest.raises(ValueError, match="si-hum: no image"):
        metric.compute()
    metric.update(pred, target, human)
    assert metric.compute().item() == pytest.approx(EXPECTED["hum"], abs=1e-6)


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    metric = ScaleInvariantRMSE("hum")
    pred, target, human = _shard(rank)
    metric.update(pred, target, human)
    value = metric.compute().item()
    if rank == 0:
        queue.put(value)
    dist.destroy_process_group()


def _shard(rank: int):
    g = torch.Generator().manual_seed(10 + rank)
    target = torch.rand(3 - rank, 1, 6, 7, generator=g) + 0.5
    pred = torch.rand(3 - rank, 1, 6, 7, generator=g) + 0.5
    human = (torch.rand(3 - rank, 1, 6, 7, generator=g) > 0.5).float()
    return pred, target, human


@pytest.mark.slow  # two spawned processes importing torch: ~10 s idle, over a minute on a busy machine
def test_two_gloo_processes_equal_one_process():
    single = ScaleInvariantRMSE("hum")
    for rank in range(2):
        single.update(*_shard(rank))
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, queue), nprocs=2, start_method="spawn", join=True)
    assert queue.get() == pytest.approx(single.compute().item(), rel=1e-6)
