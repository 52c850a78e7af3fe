"""Every task's metrics on 2 gloo processes equal the single-process value on the same data.

Each case builds a task's metric and a list of ``update`` batches (variable-length lists where the
metric gathers detections or rankings). Two real processes (``torch.distributed`` over gloo) share
the batches as a DistributedSampler would (batch i on rank i % 2, so the shards are uneven) and every
rank calls ``compute()``; the single-process value is computed here from all batches. Cases marked
``padded`` also give the short rank a repeated batch, as DistributedSampler's padding does: metrics
that claim to count repeated videos once must still agree.

A new ``torchmetrics.Metric`` in ``tasks/*/metrics.py`` or ``core/metrics.py`` without a case here
fails ``test_every_task_metric_has_a_ddp_case``: add its case to ``CASES``. The base class of ranked
metrics, ``core.metrics.PerSampleMetric``, has its own case (a minimal subclass below)."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torchmetrics

from core.metrics import PerSampleMetric

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORLD_SIZE = 2


@dataclass
class DDPCase:
    """``make()`` builds the metric (or MetricCollection); ``batches()`` gives its update arguments."""

    make: Callable[[], torchmetrics.Metric | torchmetrics.MetricCollection]
    batches: Callable[[], list[tuple]]
    covers: tuple[str, ...] = ()  # "module:Class" of the task metrics this case exercises
    padded: bool = False
    rel: float = 1e-6
    notes: str = field(default="")


# --- cases -------------------------------------------------------------------------------------------


def _classification_metrics():
    from tasks.classification.module import ImageClassificationTask

    return ImageClassificationTask(backbone="test_efficientnet", num_classes=10, image_size=32).val_metrics


def _classification_batches() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (7, 5, 9, 3, 6):  # 5 batches: rank 0 gets 3 (22 samples), rank 1 gets 2 (8 samples)
        out.append((torch.randn(n, 10, generator=g), torch.randint(0, 10, (n,), generator=g)))
    return out


def _segments(g: torch.Generator, n: int, duration: float = 100.0) -> torch.Tensor:
    start = torch.rand(n, generator=g, dtype=torch.float64) * duration * 0.8
    length = 2.0 + torch.rand(n, generator=g, dtype=torch.float64) * 15.0
    return torch.stack([start, start + length], 1)


def _talnet_detection_batches() -> list[tuple]:
    """Per video: 0-7 detections (label, start, end, score) and 1-3 ground truths (label, start,
    end), some detections near a ground truth so the AP is neither 0 nor 1."""
    g = torch.Generator().manual_seed(1)
    batches, video = [], 0
    for videos_in_batch in (2, 3, 1, 2, 2):
        ids, dets, gts = [], [], []
        for _ in range(videos_in_batch):
            m = int(torch.randint(1, 4, (1,), generator=g))
            gt_seg = _segments(g, m)
            gt_lab = torch.randint(0, 3, (m, 1), generator=g).double()
            n = int(torch.randint(0, 8, (1,), generator=g))
            near = (
                gt_seg[torch.randint(0, m, (n,), generator=g)] + torch.randn(n, 2, generator=g, dtype=torch.float64) * 2
            )
            far = _segments(g, n)
            use_near = torch.rand(n, 1, generator=g, dtype=torch.float64) < 0.6
            seg = torch.where(use_near, near, far).sort(dim=1).values
            lab = torch.where(
                use_near,
                gt_lab[torch.randint(0, m, (n,), generator=g)],
                torch.randint(0, 3, (n, 1), generator=g).double(),
            )
            score = torch.rand(n, 1, generator=g, dtype=torch.float64)
            ids.append(video)
            dets.append(torch.cat([lab, seg, score], 1))
            gts.append(torch.cat([gt_lab, gt_seg], 1))
            video += 1
        batches.append((ids, dets, gts))
    return batches


def _talnet_proposal_batches() -> list[tuple]:
    """Per video: 0-12 class-agnostic proposals (start, end, score) and 1-3 ground truths (start, end)."""
    return [
        (ids, [d[:, 1:4] for d in dets], [gt[:, 1:3] for gt in gts]) for ids, dets, gts in _talnet_detection_batches()
    ]


def _talnet_map():
    from tasks.talnet.metrics import TemporalActionDetectionMAP

    return TemporalActionDetectionMAP(num_classes=3)


def _talnet_ar():
    from tasks.talnet.metrics import AverageRecallAtN

    return AverageRecallAtN(max_proposals=(1, 3, 5))


def _depth_batches() -> list[tuple]:
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


def _depth_metric(region: str):
    def make():
        from tasks.people_depth.metrics import ScaleInvariantRMSE

        return ScaleInvariantRMSE(region=region)

    return make


def _depth_batches_with_ids() -> list[tuple]:
    """The same frames with their data-set indices, so padded repeats are recognised (count once)."""
    out, start = [], 0
    for pred, gt, human in _depth_batches():
        out.append((pred, gt, human, torch.arange(start, start + len(pred))))
        start += len(pred)
    return out


def _aligned_depth_metric(name: str):
    def make():
        from tasks.people_depth import metrics

        return getattr(metrics, name)()

    return make


def _fgvc_scores_batches() -> list[tuple]:
    """(scores (n, 12), labels (n,)) of different sizes, for the FGVC6 single-label graders."""
    g = torch.Generator().manual_seed(3)
    out = []
    for n in (7, 5, 9, 3, 6):
        labels = torch.randint(0, 12, (n,), generator=g)
        scores = torch.randn(n, 12, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, 12)
        out.append((scores, labels))
    return out


def _fgvc_multilabel_batches() -> list[tuple]:
    """(probabilities (n, 9), multi-hot targets (n, 9)) for iMet's sample-averaged F2."""
    g = torch.Generator().manual_seed(4)
    out = []
    for n in (6, 4, 8, 3, 5):
        targets = (torch.rand(n, 9, generator=g) < 0.3).float()
        targets[:, 0] = 1.0
        probs = (0.5 * targets + 0.6 * torch.rand(n, 9, generator=g)).clamp(0, 1)
        out.append((probs, targets))
    return out


def _fgvc_metric(name: str):
    def make():
        from tasks.fgvc import metrics

        return {
            "top1": lambda: metrics.TopKError(1),
            "top3": lambda: metrics.TopKError(3),
            "accuracy": metrics.CategorizationAccuracy,
            "macro_f1": lambda: metrics.MacroF1(12),
            "f2_tuned": metrics.SampleF2,
            "f2_fixed": lambda: metrics.SampleF2(threshold=0.4),
        }[name]()

    return make


_FGVC_COVERS = {
    "top1": "TopKError",
    "top3": "TopKError",
    "accuracy": "CategorizationAccuracy",
    "macro_f1": "MacroF1",
    "f2_tuned": "SampleF2",
    "f2_fixed": "SampleF2",
}


class SampleRows(PerSampleMetric):
    """The smallest PerSampleMetric: how many samples and rows were collected, and their sum.
    Each sample's rows must count once, however the batches were sharded or padded."""

    def __init__(self) -> None:
        super().__init__()
        self.add_table("rows", width=2)

    def update(self, sample_ids: Sequence[int], rows: Sequence[torch.Tensor]) -> None:
        tag = self.new_tag()
        for sample, r in zip(sample_ids, rows):
            self.append_rows("rows", sample, r, tag)

    def compute(self) -> dict[str, torch.Tensor]:
        (table,) = self.tables("rows")
        return {
            "samples": torch.tensor(float(len(set(table[:, 0].tolist())))),
            "rows": torch.tensor(float(len(table))),
            "sum": torch.tensor(float(table[:, 1:].sum()), dtype=torch.float64),
        }


def _sample_rows_batches() -> list[tuple]:
    """Per batch: sample ids and (n, 2) rows per sample, n from 0 to 3; 11 samples in 5 batches."""
    g = torch.Generator().manual_seed(5)
    out, sample = [], 0
    for size in (3, 2, 1, 3, 2):
        ids = list(range(sample, sample + size))
        sample += size
        out.append((ids, [torch.rand(int(torch.randint(0, 4, (1,), generator=g)), 2, generator=g) for _ in ids]))
    return out


def _facemesh_nme_batches() -> list[tuple]:
    """(pred points, true points, annotated-point mask) of 2-4 faces of 12 points per batch."""
    g = torch.Generator().manual_seed(5)
    out = []
    for n in (3, 2, 4, 1, 2):
        target = torch.rand(n, 12, 3, generator=g) * 100
        pred = target + torch.randn(n, 12, 3, generator=g) * 3
        mask = torch.rand(n, 12, generator=g) < 0.7
        mask[:, 0] = True
        out.append((pred, target, mask))
    return out


def _facemesh_box_batches() -> list[tuple]:
    """Image ids, detector outputs and ground truths (torchmetrics' dicts) of 1-3 images per batch."""
    g = torch.Generator().manual_seed(6)
    out, image = [], 0
    for n in (2, 3, 1, 2, 2):
        ids, preds, targets = list(range(image, image + n)), [], []
        image += n
        for _ in range(n):
            m = int(torch.randint(0, 3, (1,), generator=g))
            xy = torch.rand(m, 2, generator=g) * 80
            gt = torch.cat([xy, xy + 20 + torch.rand(m, 2, generator=g) * 20], 1)
            k = int(torch.randint(0, 4, (1,), generator=g))
            near = gt[torch.randint(0, max(m, 1), (k,), generator=g)] if m else torch.zeros(k, 4)
            boxes = near + torch.randn(k, 4, generator=g) * 6
            boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
            preds.append({"boxes": boxes, "scores": torch.rand(k, generator=g)})
            targets.append({"boxes": gt})
        out.append((ids, preds, targets))
    return out


def _facemesh_nme():
    from tasks.facemesh.metrics import InterOcularNME

    return InterOcularNME(eye_corners=(0, 5))


def _facemesh_ap50():
    from tasks.facemesh.metrics import DetectorAP50

    return DetectorAP50()


def _landmarks_gap_batches() -> list[tuple]:
    """GLDv2 recognition: 5 batches of queries, some non-landmark, some without prediction, tied scores."""
    g = torch.Generator().manual_seed(20)
    out, sample = [], 0
    for size in (3, 5, 2, 4, 3):
        ids = list(range(sample, sample + size))
        sample += size
        landmarks = torch.randint(0, 4, (size,), generator=g)
        scores = torch.round(torch.rand(size, generator=g) * 4) / 4
        kinds = torch.rand(size, generator=g) < 0.25  # non-landmark queries
        truths = [[] if k else [int(t)] for k, t in zip(kinds, torch.randint(0, 4, (size,), generator=g))]
        predicted = (torch.rand(size, generator=g) > 0.2).tolist()
        out.append((ids, landmarks, scores, truths, predicted))
    return out


def _landmarks_map_batches() -> list[tuple]:
    """GLDv2 retrieval: rankings with repeated ids and empty rankings."""
    g = torch.Generator().manual_seed(21)
    out, sample = [], 0
    for size in (2, 4, 3, 1, 3):
        ids = list(range(sample, sample + size))
        sample += size
        lengths = torch.randint(0, 8, (size,), generator=g).tolist()
        rankings = [torch.randint(0, 12, (n,), generator=g).tolist() for n in lengths]
        counts = torch.randint(1, 5, (size,), generator=g).tolist()
        relevant = [torch.randperm(12, generator=g)[:n].tolist() for n in counts]
        out.append((ids, rankings, relevant))
    return out


def _landmarks_gap():
    from tasks.landmarks.metrics import GlobalAveragePrecision

    return GlobalAveragePrecision()


def _landmarks_map():
    from tasks.landmarks.metrics import MeanAveragePrecisionAtK

    return MeanAveragePrecisionAtK(100)


def _photobooth_batches() -> list[tuple]:
    """Photobooth: per clip the shutter's shots and the labelled moments (start, end, best)."""
    g = torch.Generator().manual_seed(30)
    out, clip = [], 0
    for clips in (2, 1, 3, 2, 1):
        ids, shots, moments = list(range(clip, clip + clips)), [], []
        clip += clips
        for _ in range(clips):
            starts = sorted(torch.randperm(40, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))].tolist())
            moments.append([(s * 2, s * 2 + 5, s * 2 + 2) for s in starts])
            stray = torch.randint(0, 90, (int(torch.randint(0, 3, (1,), generator=g)),), generator=g).tolist()
            hits = [m[0] + int(torch.randint(0, 6, (1,), generator=g)) for m in moments[-1]]
            hits = [h for h in hits if torch.rand(1, generator=g) < 0.7]
            shots.append(sorted(stray + hits))
        out.append((ids, shots, moments))
    return out


def _photobooth_pr():
    from tasks.photobooth.metrics import CapturedMomentsPR

    return CapturedMomentsPR()


def _openimages_batches() -> list[tuple]:
    """Open Images: 5 batches of images with group-of boxes, verified labels and scored detections."""
    g = torch.Generator().manual_seed(31)
    out, image = [], 0
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m, n = int(torch.randint(0, 4, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
            xy = torch.rand(m, 2, generator=g, dtype=torch.float64) * 0.6
            boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(m, 2, generator=g, dtype=torch.float64)], 1)
            picked = boxes[torch.randint(0, max(m, 1), (n,), generator=g)] if m else torch.rand(n, 4, generator=g)
            det = picked + 0.03 * torch.randn(n, 4, generator=g, dtype=torch.float64)
            ids.append(image)
            preds.append({"boxes": det, "scores": torch.rand(n, generator=g).mul(10).round().div(10),
                          "labels": torch.randint(0, 3, (n,), generator=g)})  # fmt: skip
            verified = torch.randperm(3, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            targets.append({"boxes": boxes, "labels": torch.randint(0, 3, (m,), generator=g),
                            "group_of": torch.rand(m, generator=g) < 0.3, "verified": verified})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


def _openimages_map():
    from tasks.openimages.metrics import OpenImagesChallengeMAP

    return OpenImagesChallengeMAP(num_classes=3)


def _openimages_mask_batches() -> list[tuple]:
    """Open Images segmentation: 5 batches of 12 x 16 images with masked, maskless and group-of boxes,
    verified labels, shifted / duplicated / random detection masks with tied scores."""
    g = torch.Generator().manual_seed(41)
    out, image, h, w = [], 0, 12, 16
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m, n = int(torch.randint(0, 4, (1,), generator=g)), int(torch.randint(0, 6, (1,), generator=g))
            y1, x1 = torch.randint(0, h - 4, (m,), generator=g), torch.randint(0, w - 4, (m,), generator=g)
            y2, x2 = y1 + torch.randint(2, 5, (m,), generator=g), x1 + torch.randint(2, 5, (m,), generator=g)
            masks = torch.zeros(m, h, w, dtype=torch.bool)
            for k in range(m):
                if torch.rand(1, generator=g) < 0.8:  # the rest: boxes without a mask
                    masks[k, y1[k] : y2[k], x1[k] : x2[k]] = True
            pick = torch.randint(0, max(m, 1), (n,), generator=g)
            det = torch.zeros(n, h, w, dtype=torch.bool)
            for k in range(n):
                if m and torch.rand(1, generator=g) < 0.7:  # on a ground truth, shifted by a pixel half the time
                    shift = torch.randint(-1, 2, (2,), generator=g) * (torch.rand(1, generator=g) < 0.5)
                    dy, dx = (int(v) for v in shift)
                    p = int(pick[k])
                    det[k, max(y1[p] + dy, 0) : y2[p] + dy, max(x1[p] + dx, 0) : x2[p] + dx] = True
                else:
                    y, x = (int(v) for v in torch.randint(0, h - 3, (2,), generator=g))
                    det[k, y : y + 3, x : x + 3] = True
            labels = torch.randint(0, 3, (m,), generator=g)
            other = torch.randint(0, 3, (n,), generator=g)
            det_labels = torch.where(torch.rand(n, generator=g) < 0.8, labels[pick] if m else 0, other)
            scores = torch.rand(n, generator=g).mul(10).round().div(10)
            verified = torch.randperm(3, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            ids.append(image)
            preds.append({"labels": det_labels, "scores": scores, "masks": det})
            targets.append({"labels": labels, "boxes": torch.stack([x1, y1, x2, y2], 1).double(), "masks": masks,
                            "group_of": torch.rand(m, generator=g) < 0.3, "verified": verified})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


def _openimages_mask_map():
    from tasks.openimages.metrics import OpenImagesChallengeMaskMAP

    return OpenImagesChallengeMaskMAP(num_classes=3)


def _openimages_relationship_batches() -> list[tuple]:
    """Open Images relationships: 5 batches of images with image labels, jittered / duplicated / random
    tuples (one image with 60 detections, so Recall@50 cuts), tied scores, images without ground truth."""
    g = torch.Generator().manual_seed(37)
    out, image = [], 0
    for size in (3, 2, 4, 1, 3):
        ids, preds, targets = [], [], []
        for _ in range(size):
            m = int(torch.randint(0, 4, (1,), generator=g))
            xy = torch.rand(m, 2, 2, generator=g, dtype=torch.float64) * 0.5
            boxes = torch.cat([xy, xy + 0.1 + 0.3 * torch.rand(m, 2, 2, generator=g, dtype=torch.float64)], 2)
            classes = torch.randint(0, 4, (m, 3), generator=g)  # subject, object, relationship
            n = 60 if image == 5 else int(torch.randint(0, 7, (1,), generator=g))
            pick = torch.randint(0, max(m, 1), (n,), generator=g)
            copy = (torch.rand(n, generator=g) < 0.7) & (m > 0)
            det_cls = torch.where(
                copy[:, None],
                classes[pick] if m else torch.zeros(n, 3, dtype=torch.long),
                torch.randint(0, 4, (n, 3), generator=g),
            )
            det_boxes = torch.where(
                copy[:, None, None],
                boxes[pick] if m else torch.zeros(n, 2, 4, dtype=torch.float64),
                torch.rand(n, 2, 4, generator=g, dtype=torch.float64).sort(-1).values[..., [0, 2, 1, 3]],
            )
            det_boxes = (det_boxes + 0.02 * torch.randn(n, 2, 4, generator=g, dtype=torch.float64)).clamp(0, 1)
            ids.append(image)
            preds.append({"subject_labels": det_cls[:, 0], "object_labels": det_cls[:, 1],
                          "relationships": det_cls[:, 2], "scores": torch.rand(n, generator=g).mul(10).round().div(10),
                          "subject_boxes": det_boxes[:, 0], "object_boxes": det_boxes[:, 1]})  # fmt: skip
            labels = torch.randperm(4, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))]
            targets.append({"subject_labels": classes[:, 0], "object_labels": classes[:, 1],
                            "relationships": classes[:, 2], "subject_boxes": boxes[:, 0], "object_boxes": boxes[:, 1],
                            "image_labels": labels})  # fmt: skip
            image += 1
        out.append((ids, preds, targets))
    return out


def _openimages_relationship_score():
    from tasks.openimages.relationship_metrics import OpenImagesRelationshipScore

    return OpenImagesRelationshipScore(num_relationships=4)


CASES: dict[str, DDPCase] = {
    "core/per_sample_base": DDPCase(SampleRows, _sample_rows_batches),
    "core/per_sample_base_padded": DDPCase(SampleRows, _sample_rows_batches, padded=True),
    "classification/accuracy": DDPCase(_classification_metrics, _classification_batches),
    "talnet/detection_mAP": DDPCase(
        _talnet_map,
        _talnet_detection_batches,
        covers=("tasks.talnet.metrics:TemporalActionDetectionMAP",),
    ),
    "talnet/detection_mAP_padded": DDPCase(
        _talnet_map,
        _talnet_detection_batches,
        padded=True,
        covers=("tasks.talnet.metrics:TemporalActionDetectionMAP",),
    ),
    "talnet/proposal_AR": DDPCase(
        _talnet_ar, _talnet_proposal_batches, covers=("tasks.talnet.metrics:AverageRecallAtN",)
    ),
    "talnet/proposal_AR_padded": DDPCase(
        _talnet_ar,
        _talnet_proposal_batches,
        padded=True,
        covers=("tasks.talnet.metrics:AverageRecallAtN",),
    ),
    **{
        f"people_depth/si_{region}": DDPCase(
            _depth_metric(region),
            _depth_batches,
            covers=("tasks.people_depth.metrics:ScaleInvariantRMSE",),
        )
        for region in ("full", "env", "hum", "intra", "inter")
    },
    "people_depth/si_hum_padded": DDPCase(
        _depth_metric("hum"),
        _depth_batches_with_ids,
        padded=True,
        covers=("tasks.people_depth.metrics:ScaleInvariantRMSE",),
    ),
    **{
        f"people_depth/{name}": DDPCase(
            _aligned_depth_metric(name),
            _depth_batches_with_ids,
            padded=True,
            covers=(f"tasks.people_depth.metrics:{name}",),
        )
        for name in ("ScaleAlignedRMSE", "ScaleAlignedRel")
    },
    **{
        f"fgvc/{name}": DDPCase(
            _fgvc_metric(name),
            _fgvc_multilabel_batches if name.startswith("f2") else _fgvc_scores_batches,
            covers=(f"tasks.fgvc.metrics:{cls}",),
        )
        for name, cls in _FGVC_COVERS.items()
    },
    "facemesh/nme": DDPCase(_facemesh_nme, _facemesh_nme_batches, covers=("tasks.facemesh.metrics:InterOcularNME",)),
    "facemesh/ap50": DDPCase(_facemesh_ap50, _facemesh_box_batches, covers=("tasks.facemesh.metrics:DetectorAP50",)),
    "facemesh/ap50_padded": DDPCase(
        _facemesh_ap50,
        _facemesh_box_batches,
        padded=True,
        covers=("tasks.facemesh.metrics:DetectorAP50",),
    ),
    **{
        f"landmarks/{name}{'_padded' if padded else ''}": DDPCase(
            make, batches, padded=padded, covers=(f"tasks.landmarks.metrics:{cls}",)
        )
        for name, make, batches, cls in (
            ("gap", _landmarks_gap, _landmarks_gap_batches, "GlobalAveragePrecision"),
            ("map100", _landmarks_map, _landmarks_map_batches, "MeanAveragePrecisionAtK"),
        )
        for padded in (False, True)
    },
    **{
        f"photobooth/captured_moments{'_padded' if padded else ''}": DDPCase(
            _photobooth_pr, _photobooth_batches, padded=padded, covers=("tasks.photobooth.metrics:CapturedMomentsPR",)
        )
        for padded in (False, True)
    },
    **{
        f"openimages/{name}{'_padded' if padded else ''}": DDPCase(make, batches, padded=padded, covers=(cls,))
        for name, make, batches, cls in (
            ("challenge_map", _openimages_map, _openimages_batches, "tasks.openimages.metrics:OpenImagesChallengeMAP"),
            (
                "challenge_mask_map",
                _openimages_mask_map,
                _openimages_mask_batches,
                "tasks.openimages.metrics:OpenImagesChallengeMaskMAP",
            ),
            (
                "relationship_score",
                _openimages_relationship_score,
                _openimages_relationship_batches,
                "tasks.openimages.relationship_metrics:OpenImagesRelationshipScore",
            ),
        )
        for padded in (False, True)
    },
}


# --- running a case ------------------------------------------------------------------------------------


def shard(batches: Sequence[tuple], rank: int, world_size: int, padded: bool) -> list[tuple]:
    """Batch i on rank i % world_size; with ``padded``, short ranks repeat batches from the start."""
    mine = list(batches[rank::world_size])
    if padded:
        longest = math.ceil(len(batches) / world_size)
        mine += list(batches[: longest - len(mine)])
    return mine


def as_numbers(value: Any, prefix: str = "") -> dict[str, float]:
    """A compute() result (tensor, or nested dict of tensors) as flat {name: float}."""
    if isinstance(value, dict):
        out: dict[str, float] = {}
        for key, item in value.items():
            out.update(as_numbers(item, f"{prefix}{key}/" if isinstance(item, dict) else f"{prefix}{key}"))
        return out
    tensor = torch.as_tensor(value).detach().double().reshape(-1)
    if tensor.numel() == 1:
        return {prefix or "value": float(tensor)}
    return {f"{prefix or 'value'}[{i}]": float(v) for i, v in enumerate(tensor)}


def run_case(case: DDPCase, rank: int = 0, world_size: int = 1) -> dict[str, float]:
    metric = case.make()
    for batch in shard(case.batches(), rank, world_size, case.padded and world_size > 1):
        metric.update(*batch)
    return as_numbers(metric.compute())


def _worker(rank: int, world_size: int, init_file: str, out: str) -> None:
    """One DDP rank: every case, every rank computes; results (or the error) to ``out``."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),
    )
    results: dict[str, Any] = {}
    for name, case in CASES.items():
        try:
            results[name] = run_case(case, rank, world_size)
        except Exception as err:  # noqa: BLE001  (reported by the test of this case, not here)
            results[name] = {"error": f"{type(err).__name__}: {err}"}
        dist.barrier()
    Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory) -> list[dict[str, Any]]:
    """Run all cases once on 2 real gloo processes; one result dict per rank."""
    tmp = tmp_path_factory.mktemp("ddp_metrics")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.test_ddp_metrics",
                "--rank",
                str(r),
                "--world-size",
                str(WORLD_SIZE),
                "--init-file",
                str(tmp / "init"),
                "--out",
                str(tmp / f"rank{r}.json"),
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(WORLD_SIZE)
    ]
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed ({p.returncode}):\n{logs[r][-4000:]}"
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(WORLD_SIZE)]


@pytest.mark.parametrize("name", list(CASES))
def test_metric_on_two_gloo_processes_equals_one_process(name, ddp_results):
    case = CASES[name]
    single = run_case(case)
    assert single, f"{name}: compute() returned nothing"
    for rank, results in enumerate(ddp_results):
        got = results[name]
        assert "error" not in got, f"{name} on rank {rank}: {got.get('error')}"
        assert got.keys() == single.keys()
        for key, value in single.items():
            assert got[key] == pytest.approx(value, rel=case.rel, abs=1e-9), f"{name} {key} on rank {rank}"


def test_uneven_shards_are_really_uneven():
    """The harness must exercise variable-length gathers: ranks get different amounts of data."""
    batches = _talnet_detection_batches()
    sizes = [
        sum(len(d) for _, dets, _ in shard(batches, r, WORLD_SIZE, False) for d in dets) for r in range(WORLD_SIZE)
    ]
    assert len(set(sizes)) == WORLD_SIZE, sizes
    padded = shard(batches, 1, WORLD_SIZE, True)
    assert len(padded) == len(shard(batches, 0, WORLD_SIZE, True)) and padded[-1] is batches[0]


def task_metric_classes() -> list[str]:
    """ "module:Class" of every public torchmetrics.Metric defined in tasks/*/metrics.py,
    tasks/*/*_metrics.py and core/metrics.py (abstract bases excluded)."""
    found = []
    modules = ["core.metrics"] + [
        f"tasks.{path.parent.name}.{path.stem}"
        for pattern in ("*/metrics.py", "*/*_metrics.py")
        for path in sorted((PROJECT_ROOT / "tasks").glob(pattern))
    ]
    for module_name in modules:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, torchmetrics.Metric)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
                and not inspect.isabstract(obj)
            ):
                found.append(f"{module.__name__}:{name}")
    return found


def test_every_task_metric_has_a_ddp_case():
    covered = {c for case in CASES.values() for c in case.covers}
    missing = [m for m in task_metric_classes() if m not in covered]
    assert not missing, f"no DDP case for {missing}: add one to CASES in tests/test_ddp_metrics.py"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="one rank of the DDP metric harness")
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--init-file", required=True)
    parser.add_argument("--out", required=True)
    a = parser.parse_args()
    _worker(a.rank, a.world_size, a.init_file, a.out)
