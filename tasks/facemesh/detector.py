"""Face detection for any system: ``detect_faces(images) -> boxes, keypoints, scores``.

    from tasks.facemesh.detector import FaceDetector
    detector = FaceDetector.from_checkpoint("logs/facemesh-facemesh/runs/<id>/checkpoints/last.ckpt")
    for boxes, keypoints, scores in detector.detect_faces(frames):   # frames: (B, H, W, 3) uint8 RGB
        ...  # boxes (K, 4) x0 y0 x1 y1 pixels, keypoints (K, 6, 2) pixels, scores (K,)

Images of any size are letterboxed (scaled so the longer side is the detector's input size; padded
right/bottom for a detector trained here, centred for MediaPipe's) and the results mapped back to their
pixels. The six keypoints are, in order: right
eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion (the subject's sides)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.checkpoint import TASK_CLASS_KEY, CheckpointError, read_checkpoint
from datamodules.face_alignment import index_to_continuous, letterbox, warp_crops
from tasks.facemesh.anchors import decode, generate_anchors
from tasks.facemesh.model import detector_network
from tasks.facemesh.postprocess import MAX_DETECTIONS, candidates, weighted_nms

FACEMESH_TASK = "tasks.facemesh.module.FaceMeshTask"  # the task class whose checkpoints hold a detector

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
    arr = np.ascontiguousarray(arr) if arr.flags.writeable else arr.copy()  # torch wants writable memory
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def detector_input(batch: torch.Tensor, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor, float]:
    """The detector's input from (B, 3, H, W) images, the affine (2, 3) from image to input pixels and
    the offset that turns the network's outputs into input pixels (continuous coordinates).

    A detector trained here sees the image letterboxed at the top left (as in training); MediaPipe's
    detector (``coding == "mediapipe"``) sees it centred, through OpenCV's bilinear warp in pixel-index
    coordinates with zeros around it and 8-bit values (ImageToTensorCalculator with keep_aspect_ratio and
    BORDER_ZERO, as face_detection_short_range.pbtxt configures it), and its outputs are index coordinates."""
    size = model.input_size
    h, w = batch.shape[-2:]
    if getattr(model, "coding", "ssd") == "mediapipe":
        s = size / max(h, w)
        index = torch.tensor([[s, 0.0, size / 2 - s * w / 2], [0.0, s, size / 2 - s * h / 2]], dtype=batch.dtype)
        x = warp_crops(batch, index_to_continuous(index).expand(len(batch), 2, 3), size)
        return torch.round(x * 255) / 255, index, 0.5
    x, scale = letterbox(batch, size)
    return x, torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]], dtype=batch.dtype), 0.0


@torch.no_grad()
def detect_faces(
    images,
    model: torch.nn.Module,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.3,
    anchors: torch.Tensor | None = None,
) -> Detections:
    """Per image: (boxes (K, 4) xyxy px, keypoints (K, 6, 2) px, scores (K,)) after weighted NMS of
    the (at most 100) best anchors scoring >= ``score_threshold``."""
    batch = to_batch(images)
    param = next(model.parameters())
    x, matrix, offset = detector_input(batch.float(), model)
    x = x.to(param.device, param.dtype)
    if anchors is None:
        anchors = generate_anchors(model.input_size)
    anchors = anchors.to(x.device)
    was_training = model.training
    model.eval()
    try:
        logits, reg = model(x)
    finally:
        model.train(was_training)
    coding = getattr(model, "coding", "ssd")
    boxes, kps = decode(reg.float(), anchors, coding, model.input_size)
    scores = torch.sigmoid(logits.float())
    out: Detections = []
    size, scale, shift = model.input_size, float(matrix[0, 0]), matrix[:, 2].to(x.device)
    for b in range(len(x)):
        keep = candidates(scores[b], score_threshold, MAX_DETECTIONS)
        bb, kk, ss = weighted_nms(boxes[b][keep], kps[b][keep], scores[b][keep], iou_threshold)
        bb = (bb * size - shift.repeat(2)) / scale + offset
        kk = (kk * size - shift) / scale + offset
        out.append((bb.cpu(), kk.cpu(), ss.cpu()))
    return out


class FaceDetector:
    """A trained BlazeFace with its thresholds; ``detect_faces(images)`` as in the module docstring."""

    def __init__(self, model: torch.nn.Module, score_threshold: float = 0.5, iou_threshold: float = 0.3):
        self.model = model.eval()
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.anchors = generate_anchors(model.input_size)

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> FaceDetector:
        """The detector of a face-mesh checkpoint (``tasks.facemesh.module.FaceMeshTask``: trained here or
        imported from MediaPipe), its thresholds from the checkpoint's hyper-parameters. Reads only the
        detector's weights (weights_only); another task's checkpoint is refused with a one-line error."""
        checkpoint = read_checkpoint(path)
        stamped = checkpoint.get(TASK_CLASS_KEY)
        hparams = checkpoint.get("hyper_parameters") or {}
        if stamped != FACEMESH_TASK and not (stamped is None and {"detector_size", "crop_size"} <= set(hparams)):
            raise CheckpointError(
                path, f"checkpoint of {stamped or 'an unknown task'}, but a {FACEMESH_TASK} is needed"
            )
        model = detector_network(hparams.get("detector_variant", "blazeface"), hparams.get("detector_size", 128))
        state = {k[len("detector.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("detector.")}
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise CheckpointError(path, f"its detector weights do not fit ({str(err).splitlines()[0]})") from None
        kwargs.setdefault("score_threshold", hparams.get("score_threshold", 0.5))
        kwargs.setdefault("iou_threshold", hparams.get("nms_iou_threshold", 0.3))
        return cls(model, **kwargs)

    def detect_faces(self, images: Sequence[np.ndarray] | np.ndarray | torch.Tensor) -> Detections:
        return detect_faces(images, self.model, self.score_threshold, self.iou_threshold, self.anchors)
