"""MediaPipe's selfie (person) segmenter as a PyTorch network, layer for layer as the published
``selfie_segmentation.tflite`` (256x256 RGB in [0, 1] -> 256x256 person probability).

The encoder is a MobileNetV3-small-like stack of inverted residual blocks (squeeze-excitation with a
logistic gate); the decoder is an LR-ASPP head followed by three skip-fusion stages (a channel
attention on the sum of the upsampled and skip features, then a depthwise refinement) and a 2x2
stride-2 transposed convolution to full resolution. The import (tasks/people_depth/import_segmenter.py)
copies the weights in graph order (``SelfieSegmenter.tflite_layers``); ``segment_people`` runs it on
video frames as MediaPipe's ``selfie_segmentation_cpu`` graph does (stretch to 256x256, no aspect
kept; the probability map resized back to the frame)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.tf_layers import SameConv2d

INPUT_SIZE = 256


@dataclass(frozen=True)
class BlockSpec:
    """One inverted residual block: depthwise kernel, expanded width, output width, squeeze width
    (0 = no squeeze-excitation), activation, stride."""

    kernel: int
    expand: int
    out: int
    squeeze: int
    act: str
    stride: int


# The encoder of selfie_segmentation.tflite, read off its graph (conv2d_1 ... conv2d_28).
ENCODER = (
    BlockSpec(3, 16, 16, 8, "relu", 2),
    BlockSpec(3, 72, 24, 0, "relu", 2),
    BlockSpec(3, 88, 24, 0, "relu", 1),
    BlockSpec(5, 96, 32, 24, "hardswish", 2),
    BlockSpec(5, 128, 32, 32, "hardswish", 1),
    BlockSpec(5, 128, 32, 32, "hardswish", 1),
    BlockSpec(5, 96, 32, 24, "hardswish", 1),
    BlockSpec(5, 96, 32, 24, "hardswish", 1),
)
STEM_WIDTH = 16
HEAD_WIDTH = 128  # the LR-ASPP branch width
# Skip features the decoder stages fuse, deepest first: block 3 (32x32), block 1 (64x64), the stem (128x128).
SKIP_BLOCKS = (2, 0, None)

ACTIVATIONS = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def depthwise(channels: int, kernel: int, stride: int = 1) -> SameConv2d:
    return SameConv2d(channels, channels, kernel, stride, groups=channels)


class SqueezeExcite(nn.Module):
    """Global average -> 1x1 -> ReLU -> 1x1 -> logistic, multiplied onto the input."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.reduce = conv1x1(channels, squeeze)
        self.expand = conv1x1(squeeze, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise -> [squeeze-excitation] -> project (1x1, linear), with the identity
    added when the shape is kept (MobileNetV3)."""

    def __init__(self, cin: int, spec: BlockSpec) -> None:
        super().__init__()
        self.expand = conv1x1(cin, spec.expand)
        self.depthwise = depthwise(spec.expand, spec.kernel, spec.stride)
        self.act = ACTIVATIONS[spec.act]()
        self.se = SqueezeExcite(spec.expand, spec.squeeze) if spec.squeeze else nn.Identity()
        self.project = conv1x1(spec.expand, spec.out)
        self.residual = spec.stride == 1 and cin == spec.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.se(self.act(self.depthwise(self.act(self.expand(x))))))
        return x + y if self.residual else y


class LRASPP(nn.Module):
    """The segmentation head of MobileNetV3 (Howard et al. 2019, Sec. 6.4): ReLU(1x1(x)) gated by the
    logistic of a 1x1 convolution of the global average."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.features = conv1x1(cin, width)
        self.gate = conv1x1(cin, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.features(x)) * torch.sigmoid(self.gate(x.mean((2, 3), keepdim=True)))


class FusionStage(nn.Module):
    """Upsample 2x (bilinear, half-pixel centres), 1x1 to the skip's width, fuse with the skip
    (skip x channel attention of their sum, plus the upsampled features), then refine:
    r = ReLU(1x1), r + ReLU(depthwise 3x3(r))."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.up = conv1x1(cin, width)
        self.attention = SqueezeExcite(width, width)
        self.refine = conv1x1(width, width)
        self.refine_dw = depthwise(width, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False))
        fused = skip * self.attention.gate(skip + up) + up
        r = F.relu(self.refine(fused))
        return r + F.relu(self.refine_dw(r))


class SelfieSegmenter(nn.Module):
    """The published selfie segmenter: (N, 3, 256, 256) RGB in [0, 1] -> (N, 1, 256, 256) person probability."""

    input_size = INPUT_SIZE

    def __init__(self, encoder: tuple[BlockSpec, ...] = ENCODER) -> None:
        super().__init__()
        self.stem = SameConv2d(3, STEM_WIDTH, 3, 2)
        blocks, cin = [], STEM_WIDTH
        for spec in encoder:
            blocks.append(InvertedResidual(cin, spec))
            cin = spec.out
        self.blocks = nn.ModuleList(blocks)
        self.head = LRASPP(cin, HEAD_WIDTH)
        stages, cin = [], HEAD_WIDTH
        for skip in SKIP_BLOCKS:
            width = STEM_WIDTH if skip is None else encoder[skip].out
            stages.append(FusionStage(cin, width))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.segment = nn.ConvTranspose2d(cin, 1, 2, stride=2)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        x = F.hardswish(self.stem(x))
        features = [x]
        for block in self.blocks:
            x = block(x)
            features.append(x)
        x = self.head(x)
        for stage, skip in zip(self.stages, SKIP_BLOCKS):
            x = stage(x, features[0 if skip is None else skip + 1])
        return self.segment(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))

    def tflite_layers(self) -> list[nn.Conv2d | nn.ConvTranspose2d]:
        """The convolutions in the order the .tflite graph runs them (registration order here)."""
        return [m for m in self.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]


def default_segmenter_path() -> Path:
    """Where ``make mediapipe-models`` imports the segmenter: ``<data dir>/mediapipe/selfie_segmenter.pt``
    (the data dir as conf/paths/default.yaml has it: $VISIONLAB_DATA, else <project>/data)."""
    from core.resolvers import PROJECT_ROOT

    return Path(os.environ.get("VISIONLAB_DATA", PROJECT_ROOT / "data")) / "mediapipe" / "selfie_segmenter.pt"


def load_segmenter(path: str | Path) -> SelfieSegmenter:
    """The network with the weights ``import_segmenter`` wrote to ``path`` (all of them, strictly)."""
    from core.weights import read_state_dict

    state = read_state_dict(path)
    model = SelfieSegmenter()
    own = model.state_dict()
    if set(state) != set(own) or any(state[k].shape != v.shape for k, v in own.items()):
        raise ValueError(
            f"{path}: not a selfie-segmenter weights file (expected the {len(own)} tensors that "
            "`python -m tasks.people_depth.import_segmenter` writes)"
        )
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def segment_people(frames: list[np.ndarray], model: SelfieSegmenter, batch_size: int = 8) -> list[np.ndarray]:
    """Person probability (float32, frame size) of each RGB uint8 frame, as MediaPipe's selfie
    segmentation graph computes it: the frame stretched to 256x256 (bilinear), the network, the
    256x256 map resized back (bilinear)."""
    size = model.input_size
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(frames), batch_size):
        chunk = frames[start : start + batch_size]
        x = np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in chunk])
        x = torch.from_numpy(x).to(device).permute(0, 3, 1, 2).float() / 255.0
        probs = model(x)[:, 0].cpu().numpy()
        for frame, p in zip(chunk, probs):
            h, w = frame.shape[:2]
            out.append(cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR))
    return out
