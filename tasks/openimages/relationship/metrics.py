"""The Open Images Challenge 2019 visual-relationship score as a torchmetrics Metric (DDP-correct)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from core.metrics import PerSampleMetric
from tasks.openimages.relationship.protocol import IOU_THRESHOLD, RECALL_AT, ImageRelationships, evaluate_relationships


def _rows(*columns: Any) -> torch.Tensor:
    """Columns (n,) or (n, k) side by side as an (n, total) float64 table (n may be 0)."""
    cols = [c if isinstance(c, torch.Tensor) else torch.as_tensor(np.asarray(c)) for c in columns]
    n = len(cols[0])
    if n == 0:
        return torch.zeros(0, 0, dtype=torch.float64)
    return torch.cat([c.detach().cpu().to(torch.float64).reshape(n, -1) for c in cols], 1)


def _split_by_image(table: np.ndarray) -> dict[float, np.ndarray]:
    """{sample id: its rows}, rows kept in their stored order (the submission's order)."""
    if len(table) == 0:
        return {}
    table = table[np.argsort(table[:, 0], kind="stable")]
    ids, starts = np.unique(table[:, 0], return_index=True)
    return dict(zip(ids.tolist(), np.split(table, starts[1:])))


class OpenImagesRelationshipScore(PerSampleMetric):
    """Open Images Challenge 2019 visual-relationship score, 0.4 · mAP(relationships) + 0.2 ·
    Recall@50(relationships) + 0.4 · mAP(phrases) at IoU 0.5 (tensorflow/models research/object_detection
    ``VRDRelationDetectionEvaluator`` / ``VRDPhraseDetectionEvaluator`` with ``PerImageVRDEvaluation``;
    rules in tasks/openimages/relationship/protocol.py): a tuple matches when subject, object and relationship
    agree and both boxes have IoU >= 0.5 (phrases: the enclosing box of the pair), duplicates are false
    positives, only detections whose classes are annotated or verified in the image are scored, mAP is
    the mean AP over relationships with ground truth, Recall@50 counts each image's 50 best detections.

    ``update(image_ids, preds, targets)``: ``image_ids`` integers unique over the data set;
    ``preds[i]`` has ``subject_labels``, ``object_labels`` (n,) class ids, ``relationships`` (n,)
    relationship ids, ``scores`` (n,), ``subject_boxes``, ``object_boxes`` (n, 4; x1 y1 x2 y2,
    normalized like the published files for exact equality with the official float32 arithmetic);
    ``targets[i]`` has the same keys without ``scores``, plus optional ``image_labels`` (k,) class ids
    of the image-level labels (present or absent alike; without them only the classes of the image's
    relationships are evaluatable). An image with neither relationships nor image labels has no ground
    truth, and its detections are ignored, as officially.

    ``compute()`` returns ``score``, ``map_relationship``, ``recall50_relationship``, ``map_phrase``,
    ``weighted_ap_relationship``, ``weighted_ap_phrase`` and ``ap_relationship/<id>``,
    ``ap_phrase/<id>`` for the relationships with ground truth; raises ValueError without any."""

    def __init__(
        self, num_relationships: int, iou_threshold: float = IOU_THRESHOLD, recall_at: int = RECALL_AT, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.num_relationships = int(num_relationships)
        self.iou_threshold = float(iou_threshold)
        self.recall_at = int(recall_at)
        self.add_table("detections", width=12)  # subject, object, relationship, score, subject box, object box
        self.add_table("ground_truth", width=11)  # subject, object, relationship, subject box, object box
        self.add_table("image_labels", width=1)  # class id

    def _check(self, relationships: Any) -> None:
        r = torch.as_tensor(np.asarray(relationships) if not isinstance(relationships, torch.Tensor) else relationships)
        if r.numel() and (int(r.min()) < 0 or int(r.max()) >= self.num_relationships):
            raise ValueError(f"relationship ids must lie in [0, {self.num_relationships}), got {r.tolist()}")

    def update(
        self, image_ids: Sequence[int], preds: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
    ) -> None:
        tag = self.new_tag()
        for image_id, pred, target in zip(image_ids, preds, targets):
            image_id = int(image_id)
            self._check(pred["relationships"])
            self._check(target["relationships"])
            self.append_rows(
                "detections",
                image_id,
                _rows(
                    pred["subject_labels"],
                    pred["object_labels"],
                    pred["relationships"],
                    pred["scores"],
                    pred["subject_boxes"],
                    pred["object_boxes"],
                ),  # fmt: skip
                tag,
            )
            self.append_rows(
                "ground_truth",
                image_id,
                _rows(
                    target["subject_labels"],
                    target["object_labels"],
                    target["relationships"],
                    target["subject_boxes"],
                    target["object_boxes"],
                ),  # fmt: skip
                tag,
            )
            labels = target.get("image_labels")
            self.append_rows("image_labels", image_id, _rows(labels if labels is not None else []), tag)

    def compute(self) -> dict[str, torch.Tensor]:
        detections, ground_truth, image_labels = self.tables("detections", "ground_truth", "image_labels")
        gt_by, labels_by, det_by = (_split_by_image(t) for t in (ground_truth, image_labels, detections))
        empty_gt = np.zeros((0, 12))
        ground: dict[int, ImageRelationships] = {}
        for image in sorted(set(gt_by) | set(labels_by)):
            g = gt_by.get(image, empty_gt)
            ground[int(image)] = ImageRelationships(
                g[:, 1].astype(np.int64), g[:, 2].astype(np.int64), g[:, 3].astype(np.int64), g[:, 4:8], g[:, 8:12],
                image_labels=labels_by.get(image, np.zeros((0, 2)))[:, 1].astype(np.int64),
            )  # fmt: skip
        dets = {
            int(image): ImageRelationships(
                d[:, 1].astype(np.int64),
                d[:, 2].astype(np.int64),
                d[:, 3].astype(np.int64),
                d[:, 5:9],
                d[:, 9:13],
                scores=d[:, 4],
            )  # fmt: skip
            for image, d in det_by.items()
        }
        result = evaluate_relationships(ground, dets, self.iou_threshold, self.recall_at)
        out = {
            key: torch.tensor(result[key], dtype=torch.float64)
            for key in (
                "score",
                "map_relationship",
                "recall50_relationship",
                "map_phrase",
                "weighted_ap_relationship",
                "weighted_ap_phrase",
            )  # fmt: skip
        }
        for track in ("relationship", "phrase"):
            for r, value in sorted(result[f"ap_{track}"].items()):
                out[f"ap_{track}/{r}"] = torch.tensor(value, dtype=torch.float64)
        return out
