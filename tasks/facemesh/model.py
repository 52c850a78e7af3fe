"""Networks of the face-mesh system: the BlazeFace detector (Bazarevsky et al., 2019) and the
face-mesh regressor on the aligned crop (Kartynnik et al., 2019), each a builder over a compact
architecture description with small named constructors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tasks.facemesh.anchors import NUM_KEYPOINTS, anchors_per_map
from tasks.facemesh.mediapipe_nets import MediaPipeBlazeFace, MediaPipeFaceMesh

# --- blocks ---------------------------------------------------------------------------------------


class BlazeBlock(nn.Module):
    """Single BlazeBlock (BlazeFace Fig. 1, left): 5x5 depthwise conv then 1x1 projection, added to
    the shortcut (2x2 max-pooled when strided, zero-padded in channels when widening), then ReLU."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, kernel: int = 5):
        super().__init__()
        self.stride, self.pad_ch = stride, out_ch - in_ch
        if self.pad_ch < 0:
            raise ValueError(f"BlazeBlock cannot narrow channels ({in_ch} -> {out_ch})")
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, self.stride, self.stride, ceil_mode=True)
        if self.pad_ch:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad_ch))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.branch(x) + self.shortcut(x))


class DoubleBlazeBlock(BlazeBlock):
    """Double BlazeBlock (BlazeFace Fig. 1, right): two depthwise 5x5 + 1x1 stages, the first
    projecting to a narrow bottleneck (``mid`` channels) and the second expanding to ``out_ch``;
    the larger receptive field is what lets the network stop at 8x8 features."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, mid: int = 24, kernel: int = 5):
        super().__init__(in_ch, out_ch, stride, kernel)
        self.branch = nn.Sequential(
            nn.Conv2d(in_ch, in_ch, kernel, stride, kernel // 2, groups=in_ch, bias=False),
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, kernel, 1, kernel // 2, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
        )


# --- BlazeFace ----------------------------------------------------------------------------------

# BlazeFace Table 4: (kind, out channels, stride, bottleneck). 5 single, 6 double BlazeBlocks; the
# 16x16 map (after the 4th double block's predecessor group) and the 8x8 map feed the heads.
BLAZEFACE_ARCH: tuple[tuple[str, int, int, int], ...] = (
    ("single", 24, 1, 0),
    ("single", 24, 1, 0),
    ("single", 48, 2, 0),
    ("single", 48, 1, 0),
    ("single", 48, 1, 0),
    ("double", 96, 2, 24),
    ("double", 96, 1, 24),
    ("double", 96, 1, 24),
    ("double", 96, 2, 24),
    ("double", 96, 1, 24),
    ("double", 96, 1, 24),
)


def _scaled(ch: int, width: float) -> int:
    return max(8, int(round(ch * width / 4)) * 4)


class BlazeFace(nn.Module):
    """Single-shot face detector: 5x5 stem (stride 2), BlazeBlocks, and per-map 1x1 heads giving a
    face logit and 4 box + 2x6 keypoint offsets for each anchor. ``forward`` returns
    (logits (B, A), regression (B, A, 16)) in :func:`generate_anchors` order."""

    def __init__(self, input_size: int = 128, width: float = 1.0, arch: Sequence[Sequence] = BLAZEFACE_ARCH):
        super().__init__()
        self.input_size = input_size
        maps = anchors_per_map(input_size)
        stem = _scaled(24, width)
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 5, 2, 2, bias=False), nn.BatchNorm2d(stem), nn.ReLU(True))
        blocks, ch, sizes, size = [], stem, [], input_size // 2
        for kind, out, stride, mid in arch:
            out = _scaled(out, width)
            if kind == "single":
                blocks.append(BlazeBlock(ch, out, stride))
            elif kind == "double":
                blocks.append(DoubleBlazeBlock(ch, out, stride, _scaled(mid, width)))
            else:
                raise ValueError(f"unknown BlazeFace block kind {kind!r}")
            size = -(-size // stride)
            sizes.append(size)
            ch = out
        self.blocks = nn.ModuleList(blocks)
        # Heads on the last block of each map size the anchors need (16x16 and 8x8 at 128 px).
        self.tap = []
        for side, _ in maps:
            taps = [i for i, s in enumerate(sizes) if s == side]
            if not taps:
                raise ValueError(f"no {side}x{side} feature map at input size {input_size}")
            self.tap.append(taps[-1])
        widths = [_scaled(arch[i][1], width) for i in self.tap]
        self.cls_heads = nn.ModuleList(nn.Conv2d(c, n, 1) for c, (_, n) in zip(widths, maps))
        self.reg_heads = nn.ModuleList(nn.Conv2d(c, n * (4 + 2 * NUM_KEYPOINTS), 1) for c, (_, n) in zip(widths, maps))
        for head in self.cls_heads:  # focal-loss prior: start at p(face) = 0.01 (RetinaNet Sec. 4.1)
            nn.init.constant_(head.bias, -4.595)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        feats = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.tap:
                feats[i] = x
        logits, regs = [], []
        for tap, cls, reg in zip(self.tap, self.cls_heads, self.reg_heads):
            f = feats[tap]
            b = f.shape[0]
            logits.append(cls(f).permute(0, 2, 3, 1).reshape(b, -1))
            regs.append(reg(f).permute(0, 2, 3, 1).reshape(b, -1, 4 + 2 * NUM_KEYPOINTS))
        return torch.cat(logits, 1), torch.cat(regs, 1)


def blazeface_front(input_size: int = 128) -> BlazeFace:
    """BlazeFace front-camera model of the paper (128 px, 896 anchors)."""
    return BlazeFace(input_size, 1.0)


# --- face-mesh regressor ------------------------------------------------------------------------


class ResidualBlock(nn.Module):
    """Residual block of the mesh network: 3x3 depthwise + 1x1 pointwise, PReLU after the sum
    (MediaPipe's face mesh stacks such residual blocks down to a small map, Kartynnik et al. Sec. 3)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.inner = BlazeBlock(in_ch, out_ch, stride, kernel=3)
        self.act = nn.PReLU(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.inner.branch(x) + self.inner.shortcut(x))


class FaceMeshNet(nn.Module):
    """Regresses ``num_points`` 3D points (crop coordinates: x, y in [0, 1] of the crop, z in crop
    widths) and a face-presence logit from an aligned ``input_size`` crop. Stages are
    (channels, blocks); each stage starts with a stride-2 block; stages are added until the map is
    at most 4 px, then a 1x1 reduction and a dense layer read the whole map (keeping where each
    feature is, which points need)."""

    def __init__(
        self,
        num_points: int = 468,
        input_size: int = 128,
        stages: Sequence[Sequence[int]] = ((16, 1), (32, 2), (64, 2), (96, 2), (128, 2)),
        head_channels: int = 32,
        template: torch.Tensor | None = None,
    ):
        super().__init__()
        self.num_points, self.input_size = num_points, input_size
        stem = stages[0][0]
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.PReLU(stem))
        layers, ch, size = [], stem, -(-input_size // 2)
        for out, blocks in stages:
            for b in range(blocks):
                layers.append(ResidualBlock(ch, max(out, ch), 2 if b == 0 else 1))
                ch = max(out, ch)
            size = -(-size // 2)
        while size > 4:  # extra stride-2 blocks until the map is small (full-size crops)
            layers.append(ResidualBlock(ch, ch, 2))
            size = -(-size // 2)
        self.body = nn.Sequential(*layers)
        self.reduce = nn.Sequential(nn.Conv2d(ch, head_channels, 1), nn.PReLU(head_channels))
        self.map_size = size
        flat = head_channels * size * size
        self.points = nn.Linear(flat, num_points * 3)
        self.face_flag = nn.Linear(flat, 1)
        nn.init.zeros_(self.points.weight)
        with torch.no_grad():
            self.points.bias.copy_((template if template is not None else torch.zeros(num_points, 3)).reshape(-1))

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(points (B, N, 3), face logit (B,))."""
        f = self.reduce(self.body(self.stem(crops))).flatten(1)
        return self.points(f).view(-1, self.num_points, 3), self.face_flag(f).squeeze(1)


MESH_VARIANTS = {
    # name: (input size, stages). Light: MediaPipe's real-time 128 px model; full: a wider, deeper
    # network on 192 px crops (the paper's full model; 256 px also works: input size is an argument).
    "light": (128, ((16, 1), (32, 2), (64, 2), (96, 2), (128, 2))),
    "full": (192, ((32, 2), (64, 2), (96, 3), (128, 3), (192, 2))),
}


def facemesh(
    variant: str = "light", num_points: int = 468, input_size: int | None = None, template: torch.Tensor | None = None
) -> FaceMeshNet:
    """The ``light`` or ``full`` mesh network (``input_size`` overrides the variant's crop size)."""
    if variant not in MESH_VARIANTS:
        raise ValueError(f"unknown face-mesh variant {variant!r}; choose from {sorted(MESH_VARIANTS) + ['mediapipe']}")
    size, stages = MESH_VARIANTS[variant]
    return FaceMeshNet(num_points, input_size or size, stages, template=template)


def detector_network(variant: str = "blazeface", input_size: int = 128) -> nn.Module:
    """The detector: ``blazeface`` (this project's, trained here) or ``mediapipe`` (the published
    short-range BlazeFace, weights from tasks.facemesh.import_mediapipe)."""
    if variant == "blazeface":
        return blazeface_front(input_size)
    if variant == "mediapipe":
        return MediaPipeBlazeFace(input_size)
    raise ValueError(f"unknown detector variant {variant!r}; choose from ['blazeface', 'mediapipe']")


def mesh_network(
    variant: str = "light", num_points: int = 468, input_size: int | None = None, template: torch.Tensor | None = None
) -> nn.Module:
    """The mesh network: ``light`` / ``full`` (trained here) or ``mediapipe`` (the published 192 px model)."""
    if variant == "mediapipe":
        return MediaPipeFaceMesh(num_points, input_size or 192)
    return facemesh(variant, num_points, input_size, template)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
