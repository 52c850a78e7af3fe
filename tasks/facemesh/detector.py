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

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from core.checkpoint import TASK_CLASS_KEY, CheckpointError, read_checkpoint
from datamodules.face_alignment import index_to_continuous, letterbox, unit_chw, warp_crops
from tasks.facemesh.anchors import decode, generate_anchors
from tasks.facemesh.model import detector_network
from tasks.facemesh.postprocess import MAX_DETECTIONS, blend_overlaps

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
        index = centred_matrix(h, w, size)
        x = warp_crops(batch, index_to_continuous(index).expand(len(batch), 2, 3), size)
        return torch.round(x * 255) / 255, index, 0.5
    x, scale = letterbox(batch, size)
    return x, torch.tensor([[scale, 0.0, 0.0], [0.0, scale, 0.0]], dtype=batch.dtype), 0.0


def centred_matrix(h: int, w: int, size: int) -> torch.Tensor:
    """The affine (2, 3, pixel-index coordinates) that centres an h x w image in a ``size`` square."""
    s = size / max(h, w)
    return torch.tensor([[s, 0.0, size / 2 - s * w / 2], [0.0, s, size / 2 - s * h / 2]])


def detector_input_uint8(image: np.ndarray, model: torch.nn.Module) -> tuple[np.ndarray, torch.Tensor, float]:
    """:func:`detector_input` of one uint8 RGB image (H, W, 3) for MediaPipe's detector, the way MediaPipe's
    CPU graph makes it: one OpenCV warp of the 8-bit image (no float copy of the frame), then [0, 1]."""
    h, w = image.shape[:2]
    index = centred_matrix(h, w, model.input_size)
    size = (model.input_size, model.input_size)
    x = cv2.warpAffine(image, index.numpy(), size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return unit_chw(x), index, 0.5


def as_uint8_frames(images) -> list[np.ndarray] | None:
    """RGB uint8 frames (a (B, H, W, 3) / (H, W, 3) array or a list of (H, W, 3)) as a list, else None."""
    if isinstance(images, torch.Tensor):
        return None
    frames = list(images) if isinstance(images, (list, tuple)) else None
    if frames is None:
        arr = np.asarray(images)
        frames = [arr] if arr.ndim == 3 else list(arr) if arr.ndim == 4 else None
    if not frames or any(
        not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3 for f in frames
    ):
        return None
    return frames


_ANCHORS: dict[int, torch.Tensor] = {}


def cached_anchors(input_size: int) -> torch.Tensor:
    """The detector's anchors for ``input_size``, built once per process (not on every frame)."""
    if input_size not in _ANCHORS:
        _ANCHORS[input_size] = generate_anchors(input_size)
    return _ANCHORS[input_size]


def run_detector(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, regression) of ``model`` in eval mode on ``x``. A network exported with static shapes
    (core.onnx_runtime) runs one image at a time, so any batch size reuses the one-image session."""
    if model.training:  # toggling walks every sub-layer: only when needed
        model.eval()
        try:
            return model(x)
        finally:
            model.train()
    if getattr(model, "static_shapes", False) and len(x) > 1:
        outputs = [model(x[i : i + 1]) for i in range(len(x))]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
    return model(x)


@torch.no_grad()
def detect_faces(
    images,
    model: torch.nn.Module,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.3,
    anchors: torch.Tensor | None = None,
) -> Detections:
    """Per image: (boxes (K, 4) xyxy px, keypoints (K, 6, 2) px, scores (K,)) after weighted NMS of
    the (at most 100) best anchors scoring >= ``score_threshold``. uint8 frames for MediaPipe's detector
    take OpenCV's warp directly (as MediaPipe does); float batches and detectors trained here go through
    :func:`detector_input`. Only the candidates above the threshold are decoded."""
    coding = getattr(model, "coding", "ssd")
    frames = as_uint8_frames(images) if coding == "mediapipe" else None
    if frames is not None:
        inputs = [detector_input_uint8(f, model) for f in frames]
        x = torch.from_numpy(np.stack([i[0] for i in inputs]))
        matrices, offset = [i[1] for i in inputs], 0.5
    else:
        batch = to_batch(images)
        x, matrix, offset = detector_input(batch.float(), model)
        matrices = [matrix] * len(x)
    param = next(model.parameters())
    x = x.to(param.device, param.dtype)
    anchors = (cached_anchors(model.input_size) if anchors is None else anchors).to(x.device)
    logits, reg = run_detector(model, x)
    # The rest in NumPy on the few candidates: torch's per-op overhead on such small arrays cost more than
    # the arithmetic.
    logits, reg, anchors = (t.float().cpu().numpy() for t in (logits, reg, anchors))
    threshold, size = logit(score_threshold), model.input_size
    out: Detections = []
    for b in range(len(x)):
        keep = np.flatnonzero(logits[b] >= threshold)
        keep = keep[np.argsort(-logits[b][keep], kind="stable")[:MAX_DETECTIONS]]
        boxes, kps = (t.astype(np.float64) for t in decode(reg[b][keep], anchors[keep], coding, size))
        scores = 1 / (1 + np.exp(-logits[b][keep].astype(np.float64)))
        boxes, kps, scores = blend_overlaps(boxes, kps, scores, iou_threshold)
        scale, shift = float(matrices[b][0, 0]), matrices[b][:, 2].double().numpy()
        boxes = (boxes * size - np.tile(shift, 2)) / scale + offset
        kps = (kps * size - shift) / scale + offset
        out.append(tuple(torch.from_numpy(a.astype(np.float32)) for a in (boxes, kps, scores)))
    return out


def logit(p: float) -> float:
    """The logit whose sigmoid is ``p`` (thresholds compared before the sigmoid, on every anchor)."""
    if p <= 0 or p >= 1:
        return -math.inf if p <= 0 else math.inf
    return math.log(p / (1 - p))


class FaceDetector:
    """A trained BlazeFace with its thresholds; ``detect_faces(images)`` as in the module docstring."""

    def __init__(self, model: torch.nn.Module, score_threshold: float = 0.5, iou_threshold: float = 0.3):
        self.model = model.eval()
        self.score_threshold, self.iou_threshold = score_threshold, iou_threshold
        self.anchors = cached_anchors(model.input_size)

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
