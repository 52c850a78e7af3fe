"""Iterative bootstrapping (Kartynnik et al. 2019, Sec. 3, "Dataset, annotation, and training"): the
current model labels unlabeled images, and its confident predictions become training labels for the
next round. An image is taken only when every face the detector sees on it is confident (score >=
``score_threshold`` and face flag >= ``face_threshold``) and it sees no uncertain face (score between
``doubt_threshold`` -- at most ``score_threshold`` -- and ``score_threshold``): a half-labelled image
would teach the detector that a missed face is background."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datamodules.facemesh import FaceLabel, ImageRecord, load_rgb
from tasks.facemesh.detector import detect_faces, to_batch
from tasks.facemesh.pipeline import FaceMeshPipeline


def pseudo_label(
    task,
    images: Sequence[Path],
    score_threshold: float = 0.8,
    face_threshold: float = 0.9,
    doubt_threshold: float = 0.3,
) -> tuple[list[ImageRecord], dict]:
    """Records (box, keypoints, 3D points from the model) of the confidently labelled ``images``,
    and a summary (counts, the labelled files)."""
    doubt_threshold = min(doubt_threshold, score_threshold)
    pipeline = FaceMeshPipeline.from_task(task)
    was_training = task.training
    task.eval()
    records, rejected_doubt, rejected_flag, empty = [], 0, 0, 0
    try:
        for path in images:
            image = to_batch(load_rgb(path))
            ((boxes, kps, scores),) = detect_faces(
                image, task.detector, doubt_threshold, task.hparams.nms_iou_threshold
            )
            if len(scores) == 0:
                empty += 1
                continue
            if (scores < score_threshold).any():
                rejected_doubt += 1
                continue
            points, probs = pipeline.mesh_on_crops(image[0], boxes, kps)
            if (probs < face_threshold).any():
                rejected_flag += 1
                continue
            faces = [
                FaceLabel(
                    b.numpy().astype(np.float32), k.numpy().astype(np.float32), points=p.numpy().astype(np.float32)
                )
                for b, k, p in zip(boxes, kps, points)
            ]
            records.append(ImageRecord(Path(path), faces))
    finally:
        task.train(was_training)
    summary = {
        "images": len(images),
        "labelled": len(records),
        "no_face": empty,
        "rejected_uncertain_detection": rejected_doubt,
        "rejected_face_flag": rejected_flag,
        "files": [str(r.path) for r in records],
    }
    return records, summary
