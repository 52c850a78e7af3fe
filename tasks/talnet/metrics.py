"""Temporal action detection metrics as torchmetrics Metrics: mAP at tIoU thresholds (ActivityNet
detection protocol) and average recall at N proposals (ActivityNet proposal protocol, fixed N per
video). Both store per-video rows and run the NumPy protocol of
``tasks.talnet.protocol`` once, on every rank, over all of them; that same NumPy core
serves the scoring command, so the two give the same number on the same detections."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.metrics import PerSampleMetric
from tasks.talnet.protocol import (  # noqa: F401  (re-exported protocol pieces)
    PROPOSAL_TIOU_THRESHOLDS,
    THUMOS_AVERAGE_THRESHOLDS,
    THUMOS_TIOU_THRESHOLDS,
    DetectionResult,
    average_recall_at,
    evaluate_detections,
    match_detections,
)


class TemporalActionDetectionMAP(PerSampleMetric):
    """Mean average precision of temporal action detections at tIoU thresholds, reproducing the
    ActivityNet detection evaluator (Eval_Detection / compute_average_precision_detection) as used
    for THUMOS'14: mAP@0.1..0.7 and their 0.3:0.7 average under the key ``mAP``.

    Detections keep the order of their updates (video by video, as a results file lists them),
    which decides ties the way the official evaluator does on that file."""

    higher_is_better = True

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
        self.add_table("detections", width=4)  # label, start, end, score
        self.add_table("ground_truth", width=3)  # label, start, end
        self.result: DetectionResult | None = None

    def update(
        self,
        video_ids: Sequence[int],
        detections: Sequence[torch.Tensor],
        ground_truth: Sequence[torch.Tensor],
    ) -> None:
        """Per video: ``detections[i]`` (n, 4: label, start, end, score) and ``ground_truth[i]``
        (m, 3: label, start, end), in seconds; ``video_ids`` are data-set-wide integers."""
        tag = self.new_tag()
        for vid, det, gt in zip(video_ids, detections, ground_truth):
            self.append_rows("detections", vid, det, tag)
            self.append_rows("ground_truth", vid, gt, tag)

    def compute(self) -> dict[str, torch.Tensor]:
        det, gt = self.tables("detections", "ground_truth")
        self.result = evaluate_detections(det, gt, self.num_classes, self.tiou_thresholds, self.average_thresholds)
        return {k: torch.tensor(v, dtype=torch.float32) for k, v in self.result.as_dict().items()}


class AverageRecallAtN(PerSampleMetric):
    """Average recall of class-agnostic proposals at N per video (AR@N), averaged over tIoU
    0.5:0.05:0.95 as in the ActivityNet proposal protocol, for the proposal stage."""

    higher_is_better = True

    def __init__(
        self,
        max_proposals: Sequence[int] = (10, 50, 100),
        tiou_thresholds: Sequence[float] = PROPOSAL_TIOU_THRESHOLDS,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_proposals = tuple(int(n) for n in max_proposals)
        self.tiou_thresholds = tuple(tiou_thresholds)
        self.add_table("proposals", width=3)  # start, end, score
        self.add_table("ground_truth", width=2)  # start, end

    def update(
        self,
        video_ids: Sequence[int],
        proposals: Sequence[torch.Tensor],
        ground_truth: Sequence[torch.Tensor],
    ) -> None:
        """Per video: ``proposals[i]`` (n, 3: start, end, score), ``ground_truth[i]`` (m, 2)."""
        tag = self.new_tag()
        for vid, prop, gt in zip(video_ids, proposals, ground_truth):
            self.append_rows("proposals", vid, prop, tag)
            self.append_rows("ground_truth", vid, gt, tag)

    def compute(self) -> dict[str, torch.Tensor]:
        prop, gt = self.tables("proposals", "ground_truth")
        recalls = average_recall_at(prop, gt, self.max_proposals, self.tiou_thresholds)
        return {f"AR@{n}": torch.tensor(v, dtype=torch.float32) for n, v in recalls.items()}
