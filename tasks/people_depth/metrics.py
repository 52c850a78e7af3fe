"""Scale-invariant depth errors of Li et al. (CVPR 2019, Sec. 6), split by human and environment.

For an image with R_i = log d_pred_i - log d_gt_i over pixels with ground truth, the error over a
set of ordered pixel pairs P is sqrt( sum_{(i,j) in P} (R_i - R_j)^2 / (2 |P|) ): over all pairs of
valid pixels it is Eigen et al.'s scale-invariant RMSE (the standard deviation of R). The paper's
regions pick the pairs: ``full`` all pixels, ``env`` both in the environment, ``hum`` at least one
in a human region, ``intra`` both human, ``inter`` one human and one environment. Each image's
error is averaged over the images that have such pairs."""

from __future__ import annotations

import torch
from torchmetrics import Metric

REGIONS = ("full", "env", "hum", "intra", "inter")


def _pair_sum(s_a, q_a, n_a, s_b, q_b, n_b):
    """sum over i in A, j in B of (R_i - R_j)^2, from the sums S, squared sums Q and counts n."""
    return n_b * q_a + n_a * q_b - 2.0 * s_a * s_b


def scale_invariant_rmse(pred_depth: torch.Tensor, target: torch.Tensor, human: torch.Tensor, region: str):
    """Per-image errors (B,) and a (B,) bool of which images have pairs in ``region``.

    ``pred_depth`` and ``target`` are depths (B, 1, H, W) with target 0 where unknown; ``human`` is
    the human mask (> 0.5 = human)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {REGIONS}")
    pred, gt = pred_depth.double().flatten(1), target.double().flatten(1)
    valid = (gt > 0) & (pred > 0)
    r = torch.where(valid, torch.log(pred.clamp_min(1e-12)) - torch.log(gt.clamp_min(1e-12)), torch.zeros_like(gt))
    is_h = valid & (human.flatten(1) > 0.5)
    is_e = valid & ~(human.flatten(1) > 0.5)

    def stats(m):
        m = m.double()
        return (r * m).sum(1), (r * r * m).sum(1), m.sum(1)

    sv, se, sh = stats(valid), stats(is_e), stats(is_h)
    if region == "full":
        total, count = _pair_sum(*sv, *sv), sv[2] ** 2
    elif region == "env":
        total, count = _pair_sum(*se, *se), se[2] ** 2
    elif region == "intra":
        total, count = _pair_sum(*sh, *sh), sh[2] ** 2
    elif region == "inter":
        total, count = _pair_sum(*sh, *se), sh[2] * se[2]
    else:  # hum: (h, h) + (h, e) + (e, h)
        total = _pair_sum(*sh, *sh) + 2.0 * _pair_sum(*sh, *se)
        count = sh[2] ** 2 + 2.0 * sh[2] * se[2]
    has = count > 0
    error = torch.sqrt((total / (2.0 * count.clamp_min(1.0))).clamp_min(0.0))
    return torch.where(has, error, torch.zeros_like(error)), has


class ScaleInvariantRMSE(Metric):
    """Mean per-image scale-invariant RMSE over a region (``full``, ``env``, ``hum``, ``intra``,
    ``inter``), the protocol of Li et al. (CVPR 2019). Sum states, so DDP equals one process."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, region: str = "full", **kwargs):
        super().__init__(**kwargs)
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; choose from {REGIONS}")
        self.region = region
        self.add_state("error_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred_depth: torch.Tensor, target: torch.Tensor, human: torch.Tensor) -> None:
        error, has = scale_invariant_rmse(pred_depth, target, human, self.region)
        self.error_sum += error[has].sum()
        self.images += has.sum()

    def compute(self) -> torch.Tensor:
        if self.images == 0:
            raise ValueError(f"si-{self.region}: no image had ground-truth pixel pairs in this region")
        return (self.error_sum / self.images).float()
