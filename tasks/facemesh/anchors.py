"""BlazeFace anchors and the box + keypoint coding relative to them.

Anchors follow the SSD anchor rule MediaPipe's face detector is configured with (4 layers, strides
8, 16, 16, 16, scales from 0.1484375 to 0.75, aspect ratio 1 plus one interpolated scale per layer):
layers with the same stride share a feature map, so at 128 px the 16x16 map carries 2 anchors per
cell and the 8x8 map 6, 16*16*2 + 8*8*6 = 896 anchors (Bazarevsky et al. 2019, Sec. 3)."""

from __future__ import annotations

import math

import torch

from datamodules.face_alignment import array_namespace

MIN_SCALE, MAX_SCALE = 0.1484375, 0.75
STRIDES = (8, 16, 16, 16)
# SSD's coding variances (Liu et al. 2016): centre offsets / (0.1 * anchor size), log sizes / 0.2.
CENTER_VARIANCE, SIZE_VARIANCE = 0.1, 0.2
NUM_KEYPOINTS = 6


def anchor_scales() -> list[float]:
    """SSD scale of each layer: linear from MIN_SCALE to MAX_SCALE, and 1.0 after the last."""
    n = len(STRIDES)
    return [MIN_SCALE + (MAX_SCALE - MIN_SCALE) * k / (n - 1) for k in range(n)] + [1.0]


def anchors_per_map(input_size: int = 128) -> list[tuple[int, int]]:
    """(feature-map side, anchors per cell) of each detection head: [(16, 2), (8, 6)] at 128 px."""
    out: list[tuple[int, int]] = []
    for stride in STRIDES:
        side = math.ceil(input_size / stride)
        if out and out[-1][0] == side:
            out[-1] = (side, out[-1][1] + 2)
        else:
            out.append((side, 2))
    return out


def generate_anchors(input_size: int = 128) -> torch.Tensor:
    """Anchors (A, 4) as normalized (cx, cy, w, h); cells row-major, a cell's anchors together,
    maps in order 16x16 then 8x8 (the order of the detector's outputs)."""
    scales = anchor_scales()
    anchors = []
    k = 0
    while k < len(STRIDES):
        stride = STRIDES[k]
        sizes = []
        while k < len(STRIDES) and STRIDES[k] == stride:
            sizes += [scales[k], math.sqrt(scales[k] * scales[k + 1])]
            k += 1
        side = math.ceil(input_size / stride)
        for y in range(side):
            for x in range(side):
                for s in sizes:
                    anchors.append(((x + 0.5) / side, (y + 0.5) / side, s, s))
    return torch.tensor(anchors, dtype=torch.float32)


def anchors_xyxy(anchors: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = anchors.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def encode(
    boxes: torch.Tensor, keypoints: torch.Tensor, anchors: torch.Tensor, coding: str = "ssd", input_size: int = 128
) -> torch.Tensor:
    """Regression targets (..., 4 + 2K) of normalized xyxy ``boxes`` (..., 4) and keypoints
    (..., K, 2) against matched ``anchors`` (..., 4 cx cy w h), in the detector's ``coding``."""
    if coding == "mediapipe":
        return _encode_mediapipe(boxes, keypoints, anchors, input_size)
    cx, cy = (boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2
    w = (boxes[..., 2] - boxes[..., 0]).clamp_min(1e-6)
    h = (boxes[..., 3] - boxes[..., 1]).clamp_min(1e-6)
    acx, acy, aw, ah = anchors.unbind(-1)
    box = torch.stack(
        [
            (cx - acx) / (aw * CENTER_VARIANCE),
            (cy - acy) / (ah * CENTER_VARIANCE),
            torch.log(w / aw) / SIZE_VARIANCE,
            torch.log(h / ah) / SIZE_VARIANCE,
        ],
        -1,
    )
    kp = (keypoints - anchors[..., None, :2]) / (anchors[..., None, 2:] * CENTER_VARIANCE)
    return torch.cat([box, kp.flatten(-2)], -1)


def decode(regression, anchors, coding: str = "ssd", input_size: int = 128):
    """Inverse of :func:`encode`: (boxes (..., 4) normalized xyxy, keypoints (..., K, 2)); tensors, or NumPy
    arrays (the detector's few candidates per frame)."""
    if coding == "mediapipe":
        return _decode_mediapipe(regression, anchors, input_size)
    xp = array_namespace(regression)
    acx, acy, aw, ah = (anchors[..., i] for i in range(4))
    cx = regression[..., 0] * CENTER_VARIANCE * aw + acx
    cy = regression[..., 1] * CENTER_VARIANCE * ah + acy
    w = xp.exp(regression[..., 2] * SIZE_VARIANCE) * aw
    h = xp.exp(regression[..., 3] * SIZE_VARIANCE) * ah
    boxes = xp.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    kp = _pairs(regression[..., 4:])
    keypoints = kp * CENTER_VARIANCE * anchors[..., None, 2:] + anchors[..., None, :2]
    return boxes, keypoints


def _pairs(flat):
    """(..., 2K) as (..., K, 2)."""
    return flat.reshape(*flat.shape[:-1], flat.shape[-1] // 2, 2)


# MediaPipe's coding (face_detection_short_range_common.pbtxt: TensorsToDetectionsCalculator with
# x/y/w/h_scale = 128, fixed_anchor_size, reverse_output_order): the network outputs the box centre and
# the keypoints as offsets from the anchor's centre, and the box size, all in input pixels.


def _decode_mediapipe(regression, anchors, input_size: int):
    centre = anchors[..., None, :2]
    xy = _pairs(regression[..., 4:]) / input_size + centre
    c = regression[..., :2] / input_size + anchors[..., :2]
    half = regression[..., 2:4] / input_size / 2
    return array_namespace(regression).concat([c - half, c + half], -1), xy


def _encode_mediapipe(boxes: torch.Tensor, keypoints: torch.Tensor, anchors: torch.Tensor, input_size: int):
    centre, size = (boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]
    box = torch.cat([centre - anchors[..., :2], size], -1) * input_size
    kp = (keypoints - anchors[..., None, :2]) * input_size
    return torch.cat([box, kp.flatten(-2)], -1)
