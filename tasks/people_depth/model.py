"""The depth network: an hourglass (encoder-decoder with skip connections at every scale) that
predicts log depth for the whole frame, after the architecture of Chen et al. (NIPS 2016) that
Li et al. (CVPR 2019) adopt. ``inputs`` picks the paper's models: ``full`` sees RGB, the human
mask, the masked parallax depth and its confidence; ``rgb`` is the single-frame baseline."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

INPUT_CHANNELS = {"rgb": 3, "full": 6}


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class HourglassDepthNet(nn.Module):
    """Encoder of ``len(widths)`` scales (halving resolution each), a mirrored decoder with skip
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

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.encoder) - 1)

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


def normalized_log_depth(depth: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """log depth minus its weighted mean per image, 0 where depth is unknown: SfM depth has an
    arbitrary scale per clip, so the network sees only relative depth."""
    valid = (depth > 0).to(depth.dtype)
    w = weight * valid
    log_d = torch.log(depth.clamp_min(1e-6)) * valid
    mean = (w * log_d).sum(dim=(1, 2, 3), keepdim=True) / w.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    return (log_d - mean) * valid


def network_inputs(batch: dict, inputs: str) -> torch.Tensor:
    """Stack the channels the chosen model sees: RGB (in [-1, 1]), then for ``full`` the human mask,
    the normalized masked parallax log depth and its confidence."""
    rgb = batch["image"] * 2.0 - 1.0
    if inputs == "rgb":
        return rgb
    if inputs == "full":
        depth = normalized_log_depth(batch["parallax_depth"], batch["confidence"])
        return torch.cat([rgb, batch["human_mask"], depth, batch["confidence"]], dim=1)
    raise ValueError(f"unknown inputs {inputs!r}; choose from {sorted(INPUT_CHANNELS)}")


def hourglass(inputs: str = "full", widths: Sequence[int] = (32, 64, 128, 256)) -> HourglassDepthNet:
    """The depth network for the given input set (``full`` or ``rgb``)."""
    if inputs not in INPUT_CHANNELS:
        raise ValueError(f"unknown inputs {inputs!r}; choose from {sorted(INPUT_CHANNELS)}")
    return HourglassDepthNet(INPUT_CHANNELS[inputs], widths)
