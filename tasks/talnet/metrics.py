"""Temporal action detection metrics: mAP at tIoU thresholds (ActivityNet detection protocol) and
average recall at N proposals (ActivityNet proposal protocol, fixed N per video)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric

from core.ap import average_precision_from_matches

THUMOS_TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
THUMOS_AVERAGE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
PROPOSAL_TIOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2).tolist())


def tiou(segment: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Temporal IoU of one segment [start, end] with each of ``candidates`` (N, 2).

    Union is the sum of both lengths minus the intersection, as in the ActivityNet evaluator;
    a zero union (two points) gives 0."""
    candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, 2)
    start, end = float(segment[0]), float(segment[1])
    inter = np.clip(
        np.minimum(end, candidates[:, 1]) - np.maximum(start, candidates[:, 0]), 0.0, None
    )
    union = (end - start) + (candidates[:, 1] - candidates[:, 0]) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def pairwise_tiou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU between every segment of ``a`` (N, 2) and of ``b`` (M, 2): an (N, M) matrix."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(
        np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match_detections(
    det_videos: np.ndarray,
    det_segments: np.ndarray,
    det_scores: np.ndarray,
    gt_videos: np.ndarray,
    gt_segments: np.ndarray,
    tiou_thresholds: Sequence[float],
) -> np.ndarray:
    """True-positive flags (n_thresholds, n_detections) of one class's detections in score order.

    ActivityNet protocol: detections are visited by descending score (ties keep their input
    order); each looks at the ground truths of its own video by descending tIoU and takes the
    first one at or above the threshold that no higher-scored detection took. A detection in a
    video without ground truth of the class, or whose candidates are all taken, is a false
    positive. Each threshold keeps its own record of taken ground truths."""
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    order = np.argsort(-np.asarray(det_scores, dtype=np.float64), kind="stable")
    tp = np.zeros((len(thresholds), len(order)), dtype=bool)
    taken = np.zeros((len(thresholds), len(gt_videos)), dtype=bool)
    ranked_videos = np.asarray(det_videos)[order]
    ranked_segments = np.asarray(det_segments, dtype=np.float64).reshape(-1, 2)[order]
    # per video, all overlaps at once: row r holds detection r's ground truths by descending tIoU
    candidates_of: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
    for video in np.unique(ranked_videos):
        ranks = np.flatnonzero(ranked_videos == video)
        candidates = np.flatnonzero(gt_videos == video)
        if len(candidates) == 0:
            continue
        overlaps = pairwise_tiou(ranked_segments[ranks], gt_segments[candidates])
        by_overlap = np.argsort(-overlaps, axis=1, kind="stable")
        sorted_overlaps = np.take_along_axis(overlaps, by_overlap, axis=1)
        candidates_of[int(video)] = (ranks, candidates, by_overlap, sorted_overlaps)
    for ranks, candidates, by_overlap, sorted_overlaps in candidates_of.values():
        for row, rank in enumerate(ranks.tolist()):
            ordered = candidates[by_overlap[row]].tolist()
            overlaps = sorted_overlaps[row].tolist()
            for t, threshold in enumerate(thresholds.tolist()):
                for g, overlap in zip(ordered, overlaps):
                    if overlap < threshold:
                        break
                    if taken[t, g]:
                        continue
                    taken[t, g] = True
                    tp[t, rank] = True
                    break
    return tp


@dataclass
class DetectionResult:
    """Per-threshold, per-class AP (NaN where a class has no ground truth) and their means."""

    tiou_thresholds: tuple
    average_thresholds: tuple
    ap: np.ndarray  # (n_thresholds, n_classes)

    @property
    def map_per_threshold(self) -> np.ndarray:
        return np.nanmean(self.ap, axis=1)

    @property
    def average_map(self) -> float:
        idx = [self.tiou_thresholds.index(t) for t in self.average_thresholds]
        return float(np.mean(self.map_per_threshold[idx]))

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {
            f"{prefix}mAP@{t:g}": float(v)
            for t, v in zip(self.tiou_thresholds, self.map_per_threshold)
        }
        out[f"{prefix}mAP"] = self.average_map
        return out


def evaluate_detections(
    detections: np.ndarray,
    ground_truth: np.ndarray,
    num_classes: int,
    tiou_thresholds: Sequence[float] = THUMOS_TIOU_THRESHOLDS,
    average_thresholds: Sequence[float] = THUMOS_AVERAGE_THRESHOLDS,
) -> DetectionResult:
    """mAP of ``detections`` (N, 5: video, label, start, end, score) against ``ground_truth``
    (M, 4: video, label, start, end). Classes without ground truth are left out of the mean
    (their AP is NaN); a class with ground truth but no detections scores 0."""
    thresholds = tuple(float(t) for t in tiou_thresholds)
    average = tuple(float(t) for t in average_thresholds)
    missing = [t for t in average if t not in thresholds]
    if missing:
        raise ValueError(
            f"average thresholds {missing} are not among the tIoU thresholds {thresholds}"
        )
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 4)
    if len(ground_truth) == 0:
        raise ValueError("no ground-truth segments: detection mAP is undefined")
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in range(num_classes):
        gt = ground_truth[ground_truth[:, 1] == c]
        if len(gt) == 0:
            continue
        det = detections[detections[:, 1] == c]
        tp = match_detections(det[:, 0], det[:, 2:4], det[:, 4], gt[:, 0], gt[:, 2:4], thresholds)
        for t in range(len(thresholds)):
            ap[t, c] = average_precision_from_matches(tp[t], len(gt))
    return DetectionResult(thresholds, average, ap)


def average_recall_at(
    proposals: np.ndarray,
    ground_truth: np.ndarray,
    max_proposals: Sequence[int],
    tiou_thresholds: Sequence[float] = PROPOSAL_TIOU_THRESHOLDS,
) -> dict[int, float]:
    """AR@N: recall of the N best-scored proposals per video, averaged over tIoU thresholds.

    ``proposals`` (N, 4: video, start, end, score), ``ground_truth`` (M, 3: video, start, end)."""
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 3)
    if len(ground_truth) == 0:
        raise ValueError("no ground-truth segments: average recall is undefined")
    thresholds = np.asarray(tiou_thresholds, dtype=np.float64)
    best = {n: np.zeros(len(ground_truth)) for n in max_proposals}
    for video in np.unique(ground_truth[:, 0]):
        g = np.flatnonzero(ground_truth[:, 0] == video)
        p = proposals[proposals[:, 0] == video]
        p = p[np.argsort(-p[:, 3], kind="stable")]
        if len(p) == 0:
            continue
        overlaps = pairwise_tiou(ground_truth[g, 1:3], p[:, 1:3])  # (n_gt, n_prop)
        for n in max_proposals:
            best[n][g] = overlaps[:, :n].max(axis=1) if n > 0 else 0.0
    return {n: float(np.mean([(best[n] >= t).mean() for t in thresholds])) for n in max_proposals}


def _cat(state) -> torch.Tensor:
    if isinstance(state, torch.Tensor):
        return state
    if len(state) == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat([s.to(torch.float64) for s in state], dim=0)


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def _first_copy_only(tables: Sequence[np.ndarray], tag_cols: Sequence[int]) -> list[np.ndarray]:
    """Keep, for each video (column 0), only the rows of the update that first carried it: a
    DistributedSampler pads the last batch with repeated videos, which must count once."""
    tagged = [t[:, [0, c]] for t, c in zip(tables, tag_cols) if len(t)]
    if not tagged:
        return list(tables)
    first: dict[int, float] = {}
    for video, tag in np.concatenate(tagged, axis=0):
        if tag < first.get(int(video), np.inf):
            first[int(video)] = tag
    out = []
    for table, c in zip(tables, tag_cols):
        firsts = np.array([first.get(int(v), np.nan) for v in table[:, 0]])
        out.append(table[firsts == table[:, c]] if len(table) else table)
    return out


class _TaggedListMetric(Metric):
    """Base for ranked metrics: per-video rows in list states gathered by concatenation, each
    update tagged (rank, call number) so repeated videos can be recognised after the gather."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs):
        kwargs.setdefault("compute_on_cpu", True)
        super().__init__(**kwargs)
        self._updates = 0

    def _tag(self) -> float:
        self._updates += 1
        return float(_rank()) * 2.0**32 + self._updates

    def reset(self) -> None:
        super().reset()
        self._updates = 0


class TemporalActionDetectionMAP(_TaggedListMetric):
    """Mean average precision of temporal action detections at tIoU thresholds, reproducing the
    ActivityNet detection evaluator (Eval_Detection / compute_average_precision_detection) as used
    for THUMOS'14: mAP@0.1..0.7 and their 0.3:0.7 average under the key ``mAP``."""

    def __init__(
        self,
        num_classes: int,
        tiou_thresholds: Sequence[float] = THUMOS_TIOU_THRESHOLDS,
        average_thresholds: Sequence[float] = THUMOS_AVERAGE_THRESHOLDS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.tiou_thresholds = tuple(tiou_thresholds)
        self.average_thresholds = tuple(average_thresholds)
        self.add_state("detections", default=[], dist_reduce_fx="cat")
        self.add_state("ground_truth", default=[], dist_reduce_fx="cat")
        self.result: DetectionResult | None = None

    def update(
        self,
        video_ids: Sequence[int],
        detections: Sequence[torch.Tensor],
        ground_truth: Sequence[torch.Tensor],
    ) -> None:
        """Per video: ``detections[i]`` (n, 4: label, start, end, score) and ``ground_truth[i]``
        (m, 3: label, start, end), in seconds; ``video_ids`` are data-set-wide integers."""
        tag = self._tag()
        for vid, det, gt in zip(video_ids, detections, ground_truth):
            det = torch.as_tensor(det, dtype=torch.float64).reshape(-1, 4).cpu()
            gt = torch.as_tensor(gt, dtype=torch.float64).reshape(-1, 3).cpu()
            col = lambda n, v: torch.full((n, 1), float(v), dtype=torch.float64)
            self.detections.append(torch.cat([col(len(det), int(vid)), det, col(len(det), tag)], 1))
            self.ground_truth.append(torch.cat([col(len(gt), int(vid)), gt, col(len(gt), tag)], 1))

    def compute(self) -> dict[str, torch.Tensor]:
        det = _cat(self.detections).numpy().reshape(-1, 6)
        gt = _cat(self.ground_truth).numpy().reshape(-1, 5)
        det, gt = _first_copy_only([det, gt], tag_cols=[5, 4])
        self.result = evaluate_detections(
            det[:, :5], gt[:, :4], self.num_classes, self.tiou_thresholds, self.average_thresholds
        )
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.result.as_dict().items()}


class AverageRecallAtN(_TaggedListMetric):
    """Average recall of class-agnostic proposals at N per video (AR@N), averaged over tIoU
    0.5:0.05:0.95 as in the ActivityNet proposal protocol, for the proposal stage."""

    def __init__(
        self,
        max_proposals: Sequence[int] = (10, 50, 100),
        tiou_thresholds: Sequence[float] = PROPOSAL_TIOU_THRESHOLDS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_proposals = tuple(int(n) for n in max_proposals)
        self.tiou_thresholds = tuple(tiou_thresholds)
        self.add_state("proposals", default=[], dist_reduce_fx="cat")
        self.add_state("ground_truth", default=[], dist_reduce_fx="cat")

    def update(
        self,
        video_ids: Sequence[int],
        proposals: Sequence[torch.Tensor],
        ground_truth: Sequence[torch.Tensor],
    ) -> None:
        """Per video: ``proposals[i]`` (n, 3: start, end, score), ``ground_truth[i]`` (m, 2)."""
        tag = self._tag()
        for vid, prop, gt in zip(video_ids, proposals, ground_truth):
            prop = torch.as_tensor(prop, dtype=torch.float64).reshape(-1, 3).cpu()
            gt = torch.as_tensor(gt, dtype=torch.float64).reshape(-1, 2).cpu()
            col = lambda n, v: torch.full((n, 1), float(v), dtype=torch.float64)
            self.proposals.append(
                torch.cat([col(len(prop), int(vid)), prop, col(len(prop), tag)], 1)
            )
            self.ground_truth.append(torch.cat([col(len(gt), int(vid)), gt, col(len(gt), tag)], 1))

    def compute(self) -> dict[str, torch.Tensor]:
        prop = _cat(self.proposals).numpy().reshape(-1, 5)
        gt = _cat(self.ground_truth).numpy().reshape(-1, 4)
        prop, gt = _first_copy_only([prop, gt], tag_cols=[4, 3])
        recalls = average_recall_at(
            prop[:, :4], gt[:, :3], self.max_proposals, self.tiou_thresholds
        )
        return {f"AR@{n}": torch.tensor(v, dtype=torch.float32) for n, v in recalls.items()}
