"""The ActivityNet temporal detection protocol in NumPy: mAP at tIoU thresholds, as THUMOS'14
results are scored, and average recall of proposals at N per video.

One core serves both the scoring command (``python -m tasks.talnet.evaluate``, which must not
import torch) and the torchmetrics wrapper (``tasks.talnet.metrics``). It reproduces
``compute_average_precision_detection`` of the official evaluator (activitynet/ActivityNet,
Evaluation/eval_detection.py) decision for decision:

- per class, detections are ranked by ``prediction['score'].values.argsort()[::-1]`` over the
  class's detections in file order: NumPy's default (unstable) argsort, reversed, so among equal
  scores the order is NumPy's, not the input order;
- each detection looks at the ground truths of its video, ordered by
  ``tiou_arr.argsort()[::-1]`` (again reversed: of two duplicated annotations at the same tIoU,
  the one NumPy puts last comes first); at each threshold it takes the first one with
  ``tiou >= threshold`` that no higher-ranked detection took (``lock_gt``); a tIoU below the
  threshold ends the search (false positive), as does a video without ground truth of the class;
- ``tiou = intersection / (len_gt + len_det - intersection)`` as in the official
  ``segment_iou`` (utils.py): the shared ``core.overlap.temporal_iou`` with ``zero_union=None``,
  which keeps its 0/0 = NaN for two zero-length segments (NaN is never ``< threshold``, so the
  official code lets it match; so does this one);
- AP is VOC-2011 interpolated precision (``interpolated_prec_rec``), and mAP the mean over the
  classes that have ground truth in the evaluated set.

Ties resolved by NumPy's argsort are only reproducible with the same NumPy sort kernel: run both
evaluators with the same NumPy on the same machine to compare the last digits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.ap import average_precision_from_matches
from core.overlap import temporal_iou

THUMOS_TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
THUMOS_AVERAGE_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
PROPOSAL_TIOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2).tolist())


def official_ranking(scores: np.ndarray) -> np.ndarray:
    """Indices of ``scores`` best first, ties in the official order (reversed NumPy argsort)."""
    return np.argsort(np.asarray(scores, dtype=np.float64))[::-1]


def match_detections(
    det_videos: np.ndarray,
    det_segments: np.ndarray,
    det_scores: np.ndarray,
    gt_videos: np.ndarray,
    gt_segments: np.ndarray,
    tiou_thresholds: Sequence[float],
) -> np.ndarray:
    """True-positive flags (n_thresholds, n_detections) of one class's detections, in the
    official rank order; the inputs are that class's detections and ground truths in file order.

    Greedy ActivityNet matching (module docstring); each threshold keeps its own taken set."""
    thresholds = [float(t) for t in tiou_thresholds]
    order = official_ranking(det_scores)
    tp = np.zeros((len(thresholds), len(order)), dtype=bool)
    if len(order) == 0:
        return tp
    ranked_videos = np.asarray(det_videos)[order]
    ranked_segments = np.asarray(det_segments, dtype=np.float64).reshape(-1, 2)[order]
    gt_videos = np.asarray(gt_videos)
    gt_segments = np.asarray(gt_segments, dtype=np.float64).reshape(-1, 2)
    # group ranks and ground truths by video (stable: each keeps its own order)
    by_rank = np.argsort(ranked_videos, kind="stable")
    det_starts = np.flatnonzero(np.r_[True, np.diff(ranked_videos[by_rank]) != 0])
    gt_order = np.argsort(gt_videos, kind="stable")
    gt_sorted_videos = gt_videos[gt_order]
    for k, first in enumerate(det_starts):
        last = det_starts[k + 1] if k + 1 < len(det_starts) else len(by_rank)
        ranks = by_rank[first:last]  # this video's detections, best first
        video = ranked_videos[ranks[0]]
        lo = np.searchsorted(gt_sorted_videos, video, "left")
        hi = np.searchsorted(gt_sorted_videos, video, "right")
        if lo == hi:
            continue  # no ground truth of the class in this video: all false positives
        candidates = gt_order[lo:hi]  # file order within the video, as the official groupby
        overlaps = temporal_iou(ranked_segments[ranks], gt_segments[candidates], zero_union=None)
        by_overlap = np.argsort(overlaps, axis=1)[:, ::-1]  # per row: tiou_arr.argsort()[::-1]
        sorted_overlaps = np.take_along_axis(overlaps, by_overlap, axis=1).tolist()
        by_overlap = by_overlap.tolist()
        ranks = ranks.tolist()
        for t, threshold in enumerate(thresholds):
            taken = [False] * len(candidates)
            row_tp = tp[t]
            for row, rank in enumerate(ranks):
                for g, overlap in zip(by_overlap[row], sorted_overlaps[row]):
                    if overlap < threshold:
                        break
                    if taken[g]:
                        continue
                    taken[g] = True
                    row_tp[rank] = True
                    break
    return tp


@dataclass
class DetectionResult:
    """Per-threshold, per-class AP (NaN where a class has no ground truth) and their means."""

    tiou_thresholds: tuple
    average_thresholds: tuple
    ap: np.ndarray  # (n_thresholds, n_classes)
    # classes with ground truth, in order of first appearance in it: the official evaluator's
    # column order, so the mean over classes is summed in the same order (same last bits)
    class_order: tuple = ()

    @property
    def map_per_threshold(self) -> np.ndarray:
        order = list(self.class_order) or np.flatnonzero(~np.isnan(self.ap).all(0)).tolist()
        return np.ascontiguousarray(self.ap[:, order]).mean(axis=1)

    @property
    def average_map(self) -> float:
        idx = [self.tiou_thresholds.index(t) for t in self.average_thresholds]
        return float(np.mean(self.map_per_threshold[idx]))

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        out = {f"{prefix}mAP@{t:g}": float(v) for t, v in zip(self.tiou_thresholds, self.map_per_threshold)}
        out[f"{prefix}mAP"] = self.average_map
        return out


def check_detections(detections: np.ndarray, where: str = "detections") -> None:
    """Refuse what the protocol cannot rank or match: non-finite scores or times, reversed segments."""
    bad = ~np.isfinite(detections[:, 4])
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} detections have a NaN or infinite score")
    bad = ~np.isfinite(detections[:, 2:4]).all(1)
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} detections have a non-finite start or end")
    bad = detections[:, 3] < detections[:, 2]
    if bad.any():
        raise ValueError(f"{where}: {int(bad.sum())} detections end before they start")


def evaluate_detections(
    detections: np.ndarray,
    ground_truth: np.ndarray,
    num_classes: int,
    tiou_thresholds: Sequence[float] = THUMOS_TIOU_THRESHOLDS,
    average_thresholds: Sequence[float] = THUMOS_AVERAGE_THRESHOLDS,
    ignore_if_false: np.ndarray | None = None,
) -> DetectionResult:
    """mAP of ``detections`` (N, 5: video, label, start, end, score; in file order: ties depend on
    it) against ``ground_truth`` (M, 4: video, label, start, end). A detection whose video has no
    ground truth of its class (including videos outside the evaluated set) is a false positive.
    Classes without ground truth are left out of the mean (their AP is NaN); a class with ground
    truth but no detections scores 0; no ground truth at all raises.

    ``ignore_if_false`` (N,) marks detections that are removed from the ranking when they turn out
    false positives at a threshold (true positives stay): the THUMOS'14 toolkit's treatment of
    detections overlapping an Ambiguous segment ("overlapping detections will be removed from the
    FP list"). Removing a false positive takes no ground truth from anyone, so matching is
    unchanged; only the precision of the remaining ranking changes."""
    thresholds = tuple(float(t) for t in tiou_thresholds)
    average = tuple(float(t) for t in average_thresholds)
    missing = [t for t in average if t not in thresholds]
    if missing:
        raise ValueError(f"average thresholds {missing} are not among the tIoU thresholds {thresholds}")
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    ground_truth = np.asarray(ground_truth, dtype=np.float64).reshape(-1, 4)
    check_detections(detections)
    if len(ground_truth) == 0:
        raise ValueError("no ground-truth segments: detection mAP is undefined")
    if ignore_if_false is not None:
        ignore_if_false = np.asarray(ignore_if_false, dtype=bool).reshape(-1)
        if len(ignore_if_false) != len(detections):
            raise ValueError(f"ignore_if_false has {len(ignore_if_false)} entries for {len(detections)} detections")
    ap = np.full((len(thresholds), num_classes), np.nan)
    for c in range(num_classes):
        gt = ground_truth[ground_truth[:, 1] == c]
        if len(gt) == 0:
            continue
        in_class = detections[:, 1] == c
        det = detections[in_class]
        tp = match_detections(det[:, 0], det[:, 2:4], det[:, 4], gt[:, 0], gt[:, 2:4], thresholds)
        ignore = None
        if ignore_if_false is not None:  # in the same rank order as ``tp``
            ignore = ignore_if_false[in_class][official_ranking(det[:, 4])]
        for t in range(len(thresholds)):
            kept = tp[t] if ignore is None else tp[t][tp[t] | ~ignore]
            ap[t, c] = average_precision_from_matches(kept, len(gt))
    first_seen = dict.fromkeys(int(c) for c in ground_truth[:, 1] if 0 <= c < num_classes)
    return DetectionResult(thresholds, average, ap, tuple(first_seen))


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
        overlaps = np.nan_to_num(temporal_iou(ground_truth[g, 1:3], p[:, 1:3], zero_union=None))
        for n in max_proposals:
            best[n][g] = overlaps[:, :n].max(axis=1) if n > 0 else 0.0
    return {n: float(np.mean([(best[n] >= t).mean() for t in thresholds])) for n in max_proposals}
