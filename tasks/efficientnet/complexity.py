"""Parameter and multiply-add counts of a model at a given input size.

Multiply-adds are what the EfficientNet paper calls FLOPs (Table 2: B0 0.39B). They are measured
with ``torch.utils.flop_counter.FlopCounterMode`` (which counts a multiply-add as 2 FLOPs, so
MACs = FLOPs / 2) on the meta device: the shapes are traced, nothing is computed, so even B7 at
600 px costs milliseconds."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Complexity:
    params: int
    macs: int
    image_size: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9

    def as_dict(self) -> dict:
        return {**asdict(self), "params_m": self.params_m, "gmacs": self.gmacs}


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, image_size: int, in_chans: int = 3) -> int:
    """Multiply-adds of one forward pass of one image (eval mode), from FlopCounterMode's FLOPs / 2."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.empty(1, in_chans, image_size, image_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure_backbone(backbone: str, image_size: int, **backbone_kwargs) -> Complexity:
    """Build ``timm.create_model(backbone, **backbone_kwargs)`` on the meta device and count it."""
    from core.registry import register_models

    register_models()

    with torch.device("meta"):
        model = timm.create_model(backbone, **backbone_kwargs)
    return Complexity(count_params(model), count_macs(model, image_size), int(image_size))
