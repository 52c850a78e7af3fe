"""MediaPipe's published face detector (BlazeFace short-range) and face-mesh networks, layer for layer.

The layer structure is the one of ``face_detection_short_range.tflite`` and ``face_landmark.tflite``
(mediapipe 0.10.14): residual units of a 3x3 depthwise + 1x1 convolution added to a shortcut (2x2
max-pooled when strided, zero-padded in channels when widening), then ReLU (detector) or PReLU (mesh).
Convolutions pad as TensorFlow's "SAME" does (core.tf_layers.SameConv2d: the extra row/column after), so the
weights imported by :mod:`tasks.facemesh.import_mediapipe` give the LiteRT interpreter's numbers.

Both networks keep the project's interface: the detector takes [0, 1] images and returns (logits (B,
896), regression (B, 896, 16)) in MediaPipe's coding (``coding = "mediapipe"``: offsets in input pixels
from the anchor centre); the mesh takes [0, 1] crops and returns (points (B, 468, 3) in crop units,
face logit (B,)). ``raw(x)`` gives the published tensors unchanged (NCHW input as the .tflite gets it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.tf_layers import SameConv2d
from tasks.facemesh.anchors import anchors_per_map

# Channel widths of the detector's units (a "2" marks a stride-2 unit); heads read the 16x16 map after
# the 88-channel unit and the 8x8 map after the last unit (face_detection_short_range.tflite).
BLAZEFACE_SHORT_RANGE_UNITS: tuple[tuple[int, int], ...] = (
    (24, 1), (28, 1), (32, 2), (36, 1), (42, 1), (48, 2), (56, 1), (64, 1), (72, 1), (80, 1), (88, 1),
    (96, 2), (96, 1), (96, 1), (96, 1), (96, 1),
)  # fmt: skip
# Mesh trunk to the 6x6 map, then the points head and the face-flag head (face_landmark.tflite).
FACE_LANDMARK_TRUNK: tuple[tuple[int, int], ...] = (
    (16, 1), (16, 1), (32, 2), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1),
    (128, 2), (128, 1), (128, 1), (128, 2), (128, 1), (128, 1),
)  # fmt: skip
FACE_LANDMARK_POINTS_HEAD: tuple[tuple[int, int], ...] = ((128, 2), (128, 1), (128, 1))
FACE_LANDMARK_FLAG_HEAD: tuple[tuple[int, int], ...] = ((128, 2),)


class ResidualUnit(nn.Module):
    """3x3 depthwise (stride 1 or 2) + 1x1 projection, added to the shortcut, then the activation."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, prelu: bool = False, kernel: int = 3):
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(f"a residual unit cannot narrow channels ({in_ch} -> {out_ch})")
        self.stride, self.pad_ch = stride, out_ch - in_ch
        self.depthwise = SameConv2d(in_ch, in_ch, kernel, stride, groups=in_ch)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1)
        self.act = nn.PReLU(out_ch) if prelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.pad_ch:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_ch))
        return self.act(x + y)


def _units(in_ch: int, spec: Sequence[tuple[int, int]], prelu: bool) -> tuple[nn.Sequential, int]:
    layers = []
    for out, stride in spec:
        layers.append(ResidualUnit(in_ch, out, stride, prelu))
        in_ch = out
    return nn.Sequential(*layers), in_ch


class MediaPipeBlazeFace(nn.Module):
    """BlazeFace short-range (front camera, 128 px, 896 anchors) as published by MediaPipe."""

    coding = "mediapipe"
    index_coordinates = True  # outputs are pixel-index coordinates of the input (MediaPipe's convention)
    tap_unit = 10  # the 88-channel unit whose 16x16 map feeds the first heads

    def __init__(self, input_size: int = 128, units: Sequence[tuple[int, int]] = BLAZEFACE_SHORT_RANGE_UNITS):
        super().__init__()
        if input_size != 128:
            raise ValueError(f"MediaPipe's short-range BlazeFace takes 128 px input, not {input_size}")
        self.input_size, self.units_spec = input_size, tuple(units)
        self.stem = nn.Sequential(SameConv2d(3, units[0][0], 5, 2), nn.ReLU())
        self.units, _ = _units(units[0][0], units, prelu=False)
        (_, n16), (_, n8) = anchors_per_map(input_size)
        wide16, wide8 = units[self.tap_unit][0], units[-1][0]
        self.cls16, self.cls8 = nn.Conv2d(wide16, n16, 1), nn.Conv2d(wide8, n8, 1)
        self.reg16, self.reg8 = nn.Conv2d(wide16, n16 * 16, 1), nn.Conv2d(wide8, n8 * 16, 1)

    def widened(self, multiple: int = 16) -> MediaPipeBlazeFace:
        """The same function with every unit's width rounded up to ``multiple`` channels that stay zero (zero
        weights and biases in, zero weights out): ONNX Runtime's fast CPU layout (NCHWc) takes only widths that
        are multiples of its vector block (16 with AVX-512), and the published 28, 36, 42, ... left most of
        the detector out of it. 1.3 -> 1.0 ms per 128 px frame on one core, for 14 % more multiply-adds."""
        units = tuple((-(-width // multiple) * multiple, stride) for width, stride in self.units_spec)
        wide = MediaPipeBlazeFace(self.input_size, units)
        state, own_state = {}, self.state_dict()
        for key, value in wide.state_dict().items():
            own = own_state[key]
            value = torch.zeros_like(value)
            value[tuple(slice(0, n) for n in own.shape)] = own
            state[key] = value
        wide.load_state_dict(state)
        return wide.train(self.training)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The published outputs for an input in [-1, 1]: (regressors (B, 896, 16), classificators (B, 896, 1))."""
        x = self.stem(x)
        for i, unit in enumerate(self.units):
            x = unit(x)
            if i == self.tap_unit:
                f16 = x
        b = x.shape[0]

        def flat(t: torch.Tensor, width: int) -> torch.Tensor:
            return t.permute(0, 2, 3, 1).reshape(b, -1, width)

        scores = torch.cat([flat(self.cls16(f16), 1), flat(self.cls8(x), 1)], 1)
        boxes = torch.cat([flat(self.reg16(f16), 16), flat(self.reg8(x), 16)], 1)
        return boxes, scores

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(face logits (B, 896), regression (B, 896, 16)) of [0, 1] images (MediaPipe feeds [-1, 1])."""
        boxes, scores = self.raw(x * 2 - 1)
        return scores.squeeze(-1), boxes


class MediaPipeFaceMesh(nn.Module):
    """MediaPipe's face-mesh network (face_landmark.tflite: 192 px crop -> 468 x 3 points + face flag)."""

    index_coordinates = True  # points are pixel-index coordinates of the crop (MediaPipe's convention)

    def __init__(self, num_points: int = 468, input_size: int = 192):
        super().__init__()
        if (num_points, input_size) != (468, 192):
            raise ValueError(f"MediaPipe's face mesh has 468 points on 192 px crops, not {num_points} on {input_size}")
        self.num_points, self.input_size = num_points, input_size
        self.stem = nn.Sequential(SameConv2d(3, 16, 3, 2), nn.PReLU(16))
        self.trunk, ch = _units(16, FACE_LANDMARK_TRUNK, prelu=True)
        self.points_units, ch_p = _units(ch, FACE_LANDMARK_POINTS_HEAD, prelu=True)
        self.points_reduce = nn.Sequential(nn.Conv2d(ch_p, 32, 1), nn.PReLU(32))
        self.points_unit = ResidualUnit(32, 32, 1, prelu=True)
        self.points_out = nn.Conv2d(32, num_points * 3, 3, 3)
        self.flag_units, ch_f = _units(ch, FACE_LANDMARK_FLAG_HEAD, prelu=True)
        self.flag_reduce = nn.Sequential(nn.Conv2d(ch_f, 32, 1), nn.PReLU(32))
        self.flag_unit = ResidualUnit(32, 32, 1, prelu=True)
        self.flag_out = nn.Conv2d(32, 1, 3, 3)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The published outputs for a [0, 1] crop: (points (B, 1404) in crop pixels, face logit (B, 1))."""
        f = self.trunk(self.stem(x))
        p = self.points_out(self.points_unit(self.points_reduce(self.points_units(f))))
        q = self.flag_out(self.flag_unit(self.flag_reduce(self.flag_units(f))))
        return p.flatten(1), q.flatten(1)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(points (B, 468, 3): x, y in [0, 1] of the crop, z in crop widths; face logit (B,))."""
        points, flag = self.raw(crops)
        return points.view(-1, self.num_points, 3) / self.input_size, flag.squeeze(1)
