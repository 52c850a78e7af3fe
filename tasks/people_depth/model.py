"""Depth networks of Li et al. (CVPR 2019) and the inputs of Table 2's models.

``hourglass_depth_net`` is the paper's network as its public code builds it (google/mannequinchallenge
``models/hourglass.py``, after Chen et al., NIPS 2016): a 7x7 stem convolution to 128 channels with
batch norm and ReLU, then four nested levels. Each level adds a same-resolution skip path to a lower
path (2x2 average pooling, inception blocks, the next level, inception blocks, bilinear 2x upsampling
with aligned corners); an inception block concatenates a 1x1 branch with 1x1 -> kxk branches (batch
norm without affine parameters and ReLU after every convolution). A 3x3 convolution predicts log
depth from the 64 full-resolution channels; a 3x3 convolution + sigmoid predicts a confidence (kept
so the public checkpoints load; the public loss never uses it). ``width`` scales every channel count
(1.0 is the paper's); ``public_state_dict_to_ours`` maps the public checkpoints' key names.

``unet_depth_net`` is an encoder-decoder with skip connections and plain conv blocks, an option.

Inputs (``network_inputs``), channel order as the public ``Pix2PixModel.forward``:
I = RGB (in [0, 1]); IDCM = RGB, human mask, input log depth, confidence; IDCMK = RGB, human mask,
keypoint image, input log depth, confidence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

INPUT_CHANNELS = {"I": 3, "IDCM": 6, "IDCMK": 7}

# An inception block: (1x1 branch channels, ((kernel, 1x1 channels, kxk channels), ...)).
Inception = tuple[int, tuple[tuple[int, int, int], ...]]


def _inc(base: int, *branches: tuple[int, int, int]) -> Inception:
    return base, tuple(branches)


# The block types of Chen et al.'s figure (their letters), by input -> output channels.
_A = _inc(16, (3, 64, 16), (7, 64, 16), (11, 64, 16))  # 128 -> 64
_B = _inc(32, (3, 32, 32), (5, 32, 32), (7, 32, 32))  # 128 -> 128 (also 256 -> 128)
_C = _inc(32, (3, 64, 32), (7, 64, 32), (11, 64, 32))  # 128 -> 128
_D = _inc(64, (3, 32, 64), (5, 32, 64), (7, 32, 64))  # -> 256
_E = _D  # 256 -> 256
_F = _inc(64, (3, 64, 64), (7, 64, 64), (11, 64, 64))  # 256 -> 256
_G = _B  # 256 -> 128
_H = _inc(16, (3, 32, 16), (7, 32, 16), (11, 32, 16))  # 128 -> 64
_BB = _inc(32, (3, 64, 32), (5, 64, 32), (7, 64, 32))  # 128 -> 128, before H in the outermost level


@dataclass(frozen=True)
class Level:
    """One level of the hourglass: ``skip`` at this resolution; ``down`` after pooling, the inner
    level, then ``up`` before upsampling. ``lower_first``: the public module lists the lower path
    first (its ``list.0``), else the skip path."""

    skip: tuple[Inception, ...]
    down: tuple[Inception, ...]
    up: tuple[Inception, ...]
    lower_first: bool


# Outermost (the public Channels4) to innermost (Channels1).
HOURGLASS_LEVELS = (
    Level(skip=(_A,), down=(_B, _B), up=(_BB, _H), lower_first=True),  # Channels4: BB3BA | A
    Level(skip=(_B, _C), down=(_B, _D), up=(_E, _G), lower_first=True),  # Channels3: BD2EG | BC
    Level(skip=(_E, _F), down=(_E, _E), up=(_E, _F), lower_first=False),  # Channels2: EF | EE1EF
    Level(skip=(_E, _E), down=(_E, _E, _E), up=(), lower_first=False),  # Channels1: EE | EEE
)
STEM_CHANNELS = 128
HEAD_CHANNELS = 64


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class InceptionBlock(nn.Module):
    """Concatenation of a 1x1 branch and 1x1 -> kxk branches, each conv followed by a batch norm
    without affine parameters and a ReLU."""

    def __init__(self, in_channels: int, spec: Inception, width: float = 1.0):
        super().__init__()
        base, branches = spec
        self.branches = nn.ModuleList(
            [
                nn.Sequential(
                    nn.Conv2d(in_channels, _scaled(base, width), 1),
                    nn.BatchNorm2d(_scaled(base, width), affine=False),
                    nn.ReLU(inplace=True),
                )
            ]
        )
        for kernel, mid, out in branches:
            mid, out = _scaled(mid, width), _scaled(out, width)
            self.branches.append(
                nn.Sequential(
                    nn.Conv2d(in_channels, mid, 1),
                    nn.BatchNorm2d(mid, affine=False),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(mid, out, kernel, padding=(kernel - 1) // 2),
                    nn.BatchNorm2d(out, affine=False),
                    nn.ReLU(inplace=True),
                )
            )
        self.out_channels = _scaled(base, width) + sum(_scaled(b[2], width) for b in branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _chain(in_channels: int, specs: Sequence[Inception], width: float) -> tuple[nn.Sequential, int]:
    blocks = []
    for spec in specs:
        blocks.append(InceptionBlock(in_channels, spec, width))
        in_channels = blocks[-1].out_channels
    return nn.Sequential(*blocks), in_channels


class HourglassLevel(nn.Module):
    """skip(x) + upsample(up(inner(down(avgpool(x)))))."""

    def __init__(self, in_channels: int, levels: Sequence[Level], width: float = 1.0):
        super().__init__()
        level = levels[0]
        self.skip, skip_out = _chain(in_channels, level.skip, width)
        self.down, channels = _chain(in_channels, level.down, width)
        self.inner = HourglassLevel(channels, levels[1:], width) if len(levels) > 1 else None
        if self.inner is not None:
            channels = self.inner.out_channels
        self.up, low_out = _chain(channels, level.up, width)
        if low_out != skip_out:
            raise ValueError(f"hourglass level: skip path gives {skip_out} channels, lower path {low_out}")
        self.out_channels = skip_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.down(F.avg_pool2d(x, 2))
        if self.inner is not None:
            low = self.inner(low)
        low = F.interpolate(self.up(low), scale_factor=2, mode="bilinear", align_corners=True)
        return self.skip(x) + low


class HourglassDepthNet(nn.Module):
    """The public hourglass: stem, four levels, log-depth head and confidence head. Inputs of any
    size: padded (replicate) to a multiple of 16 and the output cropped back."""

    def __init__(self, in_channels: int, width: float = 1.0, levels: Sequence[Level] = HOURGLASS_LEVELS):
        super().__init__()
        stem = _scaled(STEM_CHANNELS, width)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 7, padding=3), nn.BatchNorm2d(stem), nn.ReLU(inplace=True)
        )
        self.body = HourglassLevel(stem, levels, width)
        head = self.body.out_channels
        self.depth_head = nn.Conv2d(head, 1, 3, padding=1)
        self.confidence_head = nn.Sequential(nn.Conv2d(head, 1, 3, padding=1), nn.Sigmoid())
        self.multiple = 2 ** len(levels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.body(self.stem(x))[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log depth (B, 1, H, W)."""
        return self.depth_head(self.features(x))

    def forward_with_confidence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.depth_head(features), self.confidence_head(features)


def _public_names(levels: Sequence[Level], ours: str, public: str) -> list[tuple[str, str]]:
    """(our module prefix, public module prefix) of every inception block, level by level: the public
    ``ChannelsN`` holds ``list.<i>`` = [AvgPool, *down, Channels(N-1), *up, Upsample] for the lower
    path and ``list.<j>`` = [*skip] for the skip path."""
    level = levels[0]
    lower, skip = (
        (f"{public}.list.0", f"{public}.list.1") if level.lower_first else (f"{public}.list.1", f"{public}.list.0")
    )
    pairs = [(f"{ours}.skip.{i}", f"{skip}.{i}") for i in range(len(level.skip))]
    pairs += [(f"{ours}.down.{i}", f"{lower}.{i + 1}") for i in range(len(level.down))]
    inner_index = len(level.down) + 1
    if len(levels) > 1:
        pairs += _public_names(levels[1:], f"{ours}.inner", f"{lower}.{inner_index}")
    up_start = inner_index + (1 if len(levels) > 1 else 0)
    pairs += [(f"{ours}.up.{i}", f"{lower}.{up_start + i}") for i in range(len(level.up))]
    return pairs


def public_module_names(levels: Sequence[Level] = HOURGLASS_LEVELS) -> dict[str, str]:
    """Public module prefix -> ours, for ``models/hourglass.py``'s ``HourglassModel``: ``seq.0``/
    ``seq.1`` the stem conv and batch norm, ``seq.3`` the outermost level, ``pred_layer`` and
    ``uncertainty_layer.0`` the heads, and ``convs.<b>`` the branches of each inception block."""
    names = {
        "seq.0": "stem.0",
        "seq.1": "stem.1",
        "pred_layer": "depth_head",
        "uncertainty_layer.0": "confidence_head.0",
    }
    for ours, public in _public_names(levels, "body", "seq.3"):
        names[f"{public}.convs"] = f"{ours}.branches"
    return names


def public_state_dict_to_ours(
    state: dict[str, torch.Tensor], levels: Sequence[Level] = HOURGLASS_LEVELS
) -> dict[str, torch.Tensor]:
    """Rename a public checkpoint's keys (``module.`` prefix from DataParallel stripped) to this
    module's; keys that match no public module are returned unchanged."""
    state = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}
    prefixes = sorted(public_module_names(levels).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state.items():
        for public, ours in prefixes:
            if key.startswith(public + "."):
                key = ours + key[len(public) :]
                break
        out[key] = value
    return out


def is_public_state_dict(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("seq.0.", "module.seq.0.")) for k in state)


def hourglass_depth_net(inputs: str = "IDCM", width: float = 1.0) -> HourglassDepthNet:
    """The paper's hourglass for Table 2's input set ``inputs`` (I, IDCM or IDCMK); ``width``
    scales all channels (1.0 loads the public checkpoints)."""
    return HourglassDepthNet(_in_channels(inputs), width)


# --- U-Net option -----------------------------------------------------------------------------------


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNetDepthNet(nn.Module):
    """Encoder of ``len(widths)`` scales (max-pooling between), a mirrored decoder with skip
    connections, and a 1-channel log-depth head at full resolution."""

    def __init__(self, in_channels: int, widths: Sequence[int] = (32, 64, 128, 256)):
        super().__init__()
        widths = list(widths)
        self.encoder = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoder.append(_conv_block(cin, w))
            cin = w
        self.decoder = nn.ModuleList(_conv_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1))
        self.head = nn.Conv2d(widths[0], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for i in reversed(range(len(self.decoder))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.decoder[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)


def unet_depth_net(inputs: str = "IDCM", widths: Sequence[int] = (32, 64, 128, 256)) -> UNetDepthNet:
    return UNetDepthNet(_in_channels(inputs), widths)


def _in_channels(inputs: str) -> int:
    if inputs not in INPUT_CHANNELS:
        raise ValueError(f"unknown inputs {inputs!r}; choose from {list(INPUT_CHANNELS)} (Table 2's models)")
    return INPUT_CHANNELS[inputs]


def depth_network(
    network: str = "hourglass", inputs: str = "IDCM", width: float = 1.0, unet_widths: Sequence[int] | None = None
) -> nn.Module:
    """``hourglass`` (the paper's, default) or ``unet``."""
    if network == "hourglass":
        return hourglass_depth_net(inputs, width)
    if network == "unet":
        return unet_depth_net(inputs, unet_widths or (32, 64, 128, 256))
    raise ValueError(f"unknown network {network!r}; choose 'hourglass' or 'unet'")


def network_inputs(batch: dict, inputs: str) -> torch.Tensor:
    """Stack the channels of Table 2's model ``inputs`` in the public code's order."""
    rgb = batch["image"]
    if inputs == "I":
        return rgb
    if inputs not in INPUT_CHANNELS:
        raise ValueError(f"unknown inputs {inputs!r}; choose from {list(INPUT_CHANNELS)}")
    channels = [rgb, batch["human_mask"]]
    if inputs == "IDCMK":
        if "keypoints" not in batch:
            raise KeyError(
                "inputs=IDCMK needs the keypoint channel: set data.keypoints=true "
                "(frames need <clip>/keypoints/<timestamp>_keypoints.json)"
            )
        channels.append(batch["keypoints"])
    channels += [batch["input_log_depth"], batch["confidence"]]
    return torch.cat(channels, dim=1)
