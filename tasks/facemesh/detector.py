"""Face detection for any system: ``detect_faces(images) -> boxes, keypoints, scores``.

    from tasks.facemesh.detector import FaceDetector
    detector = FaceDetector.from_checkpoint("logs/facemesh-facemesh/runs/<id>/checkpoints/last.ckpt")
    for boxes, keypoints, scores in detector.detect_faces(frames):   # frames: (B, H, W, 3) uint8 RGB
        ...  # boxes (K, 4) x0 y0 x1 y1 pixels, keypoints (K, 6, 2) pixels, scores (K,)

Images of any size are letterboxed (scaled so the longer side is the detector's input size, padded
right/bottom) and the results mapped back to their pixels. The six keypoints are, in order: right
eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (the subject's sides)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tasks.facemesh.anchors import decode, generate_anchors
from tasks.facemesh.model import BlazeFace
from tasks.facemesh.postprocess import MAX_DETECTIONS, candidates, weighted_nms

Detections = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def to_batch(images) -> torch.Tensor:
    """uint8 (H, W, 3) / (B, H, W, 3) arrays or a list of them, or float (B, 3, H, W) in [0, 1],
    as float (B, 3, H, W). A list may mix sizes only if every image has the same size."""
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        return images if images.dim() == 4 else images[None]
    if isinstance(images, (list, tuple)):
        images = np.stack([np.asarray(i) for i in images])
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected RGB images (B, H, W, 3) or (H, W, 3), got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float() / 255.0


def letterbox(images: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Resize (B, 3, H, W) so the longer side is ``size``, pad right/bottom; returns (batch, scale)."""
    h, w = images.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        images = F.interpolate(images, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    return F.pad(images, (0, size - nw, 0, size - nh)), scale


@torch.no_grad()
def detect_faces(
    images,
    model: BlazeFace,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.3,
    anchors: torch.Tensor | None = None,
) -> Detections:
    """Per image: (boxes (K, 4) xyxy px, keypoints (K, 6, 2) px, scores (K,)) after weighted NMS of
    the (at most 100) best anchors scoring >= ``score_threshold``."""
    batch = to_batch(images)
    param = next(model.parameters())
    x, scale = letterbox(batch.to(param.device, param.dtype), model.input_size)
    if anchors is None:
        anchors = generate_anchors(model.input_size)
    anchors = anchors.to(x.device)
    was_training = model.training
    model.eval()
    try:
        logits, reg = model(x)
    finally:
        model.train(was_training)
    boxes, kps = decode(reg, anchors)
    scores = torch.sigmoid(logits)
    out: Detections = []
    px = model.input_size / scale
    for b in range(len(x)):
        keep = candidates(scores[b], score_threshold, MAX_DETECTIONS)
        bb, kk, ss = weighted_nms(boxes[b][keep], kps[b][keep], scores[b][keep], iou_threshold)
        out.append(((bb * px).cpu(), (kk * px).cpu(), ss.cpu()))
    return out


class FaceDetector:
    """A trained BlazeFace with its thresholds; ``detect_faces(images)`` as in the module docstring."""

    def __init__(self, model: BlazeFace, score_threshold: float = 0.5, iou_threshold: float = 0.3):
        self.model = model.eval()
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.anchors = generate_anchors(model.input_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> FaceDetector:
        """The detector of a face-mesh checkpoint (``tasks.facemesh.module.FaceMeshTask``)."""
        from tasks.facemesh.module import FaceMeshTask

        task = FaceMeshTask.load_from_checkpoint(path, map_location="cpu")
        kwargs.setdefault("score_threshold", task.hparams.score_threshold)
        kwargs.setdefault("iou_threshold", task.hparams.nms_iou_threshold)
        return cls(task.detector, **kwargs)

    def detect_faces(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> Detections:
        return detect_faces(images, self.model, self.score_threshold, self.iou_threshold, self.anchors)
