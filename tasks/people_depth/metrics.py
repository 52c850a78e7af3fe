"""Depth errors of Table 2 of Li et al. (CVPR 2019), as the paper's public code computes them.

The reference is ``JointLoss.compute_si_rmse``, ``compute_rmse_error`` and ``compute_l1_rel_error``
in google/mannequinchallenge ``models/networks.py``, averaged over frames by ``test_tum.py``. With
d = log d_pred - log d_gt over pixels with ground truth (d_gt > 1e-8), H the human pixels, E the
environment pixels and P all of them (each restricted to ground truth), per frame:

* si-full, si-env, si-intra = sqrt(2 * MSE_M) over M = P, E, H, where (``Data_Loss``)
  MSE_M = sum_M d^2 / N - (sum_M d)^2 / N^2 with N = |M| + 1e-6;
* si-hum   = sqrt( sum_{i in H} sum_{j in P} (d_i - d_j)^2 / (|H| |P| + 1e-6) );
* si-inter = sqrt( sum_{i in H} sum_{j in E} (d_i - d_j)^2 / (|H| |E| + 1e-6) )
  (no factor 2 in these two: each unordered pair is counted once, not twice);
* RMSE = sqrt( sum_P (g - s p)^2 / (|P| + 1e-6) ) and
  Rel = sum_P |g - s p| / (g + 1e-6) / (|P| + 1e-6), with s the least-squares scale
  argmin_s sum_P (g - s p)^2 = sum_P p g / sum_P p^2 (their ``np.linalg.lstsq`` on one column).

Each value is computed per frame, then averaged over frames. A frame with no pixel in a region
contributes 0 (the public code's 0 / (0 + 1e-6)) and still counts, unless ``skip_empty_frames``.

The metrics store one row per frame (``core.metrics.PerSampleMetric``), so under DDP a frame that a
``DistributedSampler`` repeats to pad the last batch counts once when ``sample_ids`` are given."""

from __future__ import annotations

import torch

from core.metrics import PerSampleMetric, current_rank

EPSILON = 1e-6  # the public code's EPSILON, in every denominator above
GT_THRESHOLD = 1e-8  # ground truth where d_gt > 1e-8 (the public loader's gt_mask)
REGIONS = ("full", "env", "hum", "intra", "inter")


def _frames(pred_depth: torch.Tensor, target: torch.Tensor, human: torch.Tensor):
    """(B, H*W) float64 prediction, ground truth, its mask and the human mask restricted to it."""
    pred = pred_depth.detach().double().flatten(1)
    gt = target.detach().double().flatten(1)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred_depth.shape)} and target {tuple(target.shape)} differ in size")
    gt_mask = (gt > GT_THRESHOLD).double()
    human_gt = (human.detach().double().flatten(1) > 0.5).double() * gt_mask
    return pred, gt, gt_mask, human_gt


def _mse_m(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per frame sum_M d^2 / N - (sum_M d)^2 / N^2, N = |M| + 1e-6 (the public ``Data_Loss``)."""
    n = mask.sum(1) + EPSILON
    dm = d * mask
    return (dm * dm).sum(1) / n - dm.sum(1) ** 2 / (n * n)


def _pair_mse(d: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Per frame sum_{i in rows} sum_{j in cols} (d_i - d_j)^2 / (|rows| |cols| + 1e-6), expanded as
    sum_i [ |cols| d_i^2 + sum_cols d^2 - 2 d_i sum_cols d ] over rows."""
    n_cols, n_rows = cols.sum(1), rows.sum(1)
    dc = d * cols
    per_pixel = n_cols[:, None] * d * d + (dc * dc).sum(1, keepdim=True) - 2.0 * dc.sum(1, keepdim=True) * d
    return (per_pixel * rows).sum(1) / (n_rows * n_cols + EPSILON)


def scale_invariant_rmse(
    pred_depth: torch.Tensor, target: torch.Tensor, human: torch.Tensor, region: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame si-RMSE (B,) of ``region`` and a (B,) bool of frames with pixels in the region.

    ``pred_depth`` and ``target`` are depths (B, 1, H, W), target <= 1e-8 where unknown; ``human``
    is the human mask (> 0.5 = human)."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose from {REGIONS}")
    pred, gt, gt_mask, human_gt = _frames(pred_depth, target, human)
    env_gt = gt_mask - human_gt
    log_gt = torch.log(torch.where(gt_mask > 0, gt, torch.ones_like(gt)))  # the loader sets holes to 1
    d = torch.log(pred.clamp_min(1e-30)) - log_gt
    if region == "full":
        mse, has = 2.0 * _mse_m(d, gt_mask), gt_mask.sum(1) > 0
    elif region == "env":
        mse, has = 2.0 * _mse_m(d, env_gt), env_gt.sum(1) > 0
    elif region == "intra":
        mse, has = 2.0 * _mse_m(d, human_gt), human_gt.sum(1) > 0
    elif region == "hum":
        mse, has = _pair_mse(d, human_gt, gt_mask), human_gt.sum(1) > 0
    else:  # inter
        mse, has = _pair_mse(d, human_gt, env_gt), (human_gt.sum(1) > 0) & (env_gt.sum(1) > 0)
    return torch.sqrt(mse.clamp_min(0.0)), has


def scale_aligned_errors(
    pred_depth: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame (RMSE, Rel, has ground truth) after the least-squares scale s = sum p g / sum p^2."""
    pred, gt, gt_mask, _ = _frames(pred_depth, target, torch.zeros_like(target))
    p = pred * gt_mask
    denom = (p * p).sum(1)
    scale = torch.where(denom > 0, (p * gt).sum(1) / denom.clamp_min(1e-300), torch.zeros_like(denom))
    residual = (gt - scale[:, None] * pred) * gt_mask
    n = gt_mask.sum(1) + EPSILON
    rmse = torch.sqrt((residual * residual).sum(1) / n)
    rel = (residual.abs() / (gt + EPSILON)).sum(1) / n
    return rmse, rel, gt_mask.sum(1) > 0


class _PerFrameDepthMetric(PerSampleMetric):
    """Per-frame values stored as rows, averaged over frames in ``compute`` (every rank computes)."""

    higher_is_better = False
    name = "depth error"

    def __init__(self, skip_empty_frames: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.skip_empty_frames = bool(skip_empty_frames)
        self.add_table("frames", width=2)  # value, 1 if the frame has pixels in the region
        self._next_id = 0

    def frame_values(self, pred_depth, target, human_mask) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def update(
        self,
        pred_depth: torch.Tensor,
        target: torch.Tensor,
        human_mask: torch.Tensor,
        sample_ids: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of frames; ``sample_ids`` (B,) are data-set indices, so a frame repeated by a
        DistributedSampler's padding counts once (without them every frame counts)."""
        values, has = self.frame_values(pred_depth, target, human_mask)
        if sample_ids is None:
            # Unique over ranks and calls: nothing to de-duplicate.
            base = current_rank() * 2**40 + self._next_id
            sample_ids = torch.arange(base, base + len(values))
            self._next_id += len(values)
        tag = self.new_tag()
        for i, v, h in zip(torch.as_tensor(sample_ids).tolist(), values.tolist(), has.tolist()):
            self.append_rows("frames", int(i), [[v, float(h)]], tag)

    def compute(self) -> torch.Tensor:
        (rows,) = self.tables("frames")
        if self.skip_empty_frames:
            rows = rows[rows[:, 2] > 0]
        if len(rows) == 0:
            raise ValueError(f"{self.name}: no frame to average (no ground truth in this region)")
        return torch.tensor(rows[:, 1].mean(), dtype=torch.float32)

    def reset(self) -> None:
        super().reset()
        self._next_id = 0


class ScaleInvariantRMSE(_PerFrameDepthMetric):
    """Mean per-frame scale-invariant RMSE of a region (``full``, ``env``, ``hum``, ``intra``,
    ``inter``): the public ``compute_si_rmse`` (formulas in this module's docstring)."""

    def __init__(self, region: str = "full", skip_empty_frames: bool = False, **kwargs):
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; choose from {REGIONS}")
        super().__init__(skip_empty_frames, **kwargs)
        self.region = region
        self.name = f"si-{region}"

    def frame_values(self, pred_depth, target, human_mask):
        return scale_invariant_rmse(pred_depth, target, human_mask, self.region)


class ScaleAlignedRMSE(_PerFrameDepthMetric):
    """Mean per-frame RMSE after least-squares scale alignment (the public ``compute_rmse_error``)."""

    name = "RMSE"

    def frame_values(self, pred_depth, target, human_mask=None):
        rmse, _, has = scale_aligned_errors(pred_depth, target)
        return rmse, has


class ScaleAlignedRel(_PerFrameDepthMetric):
    """Mean per-frame relative error |g - s p| / g after least-squares scale alignment (the public
    ``compute_l1_rel_error``)."""

    name = "Rel"

    def frame_values(self, pred_depth, target, human_mask=None):
        _, rel, has = scale_aligned_errors(pred_depth, target)
        return rel, has
