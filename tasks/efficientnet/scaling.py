"""The compound scaling rule of EfficientNet (Tan & Le, ICML 2019, Sec. 3.3).

A baseline is scaled by depth d = alpha^phi, width w = beta^phi and resolution r = gamma^phi, with
alpha * beta^2 * gamma^2 ~= 2 so that each unit step of phi about doubles the FLOPs (FLOPs grow
linearly in d and quadratically in w and r). This module holds only the arithmetic: the rounding
rules that turn real-valued multipliers into layer counts, channel counts and an input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from timm.layers import make_divisible

# Channel counts are multiples of 8 and never more than 10 % below the exact value (the paper's
# reference code, `round_filters`); timm's make_divisible implements exactly that rule.
CHANNEL_DIVISOR = 8
CHANNEL_ROUND_LIMIT = 0.9
# Every resolution the paper publishes for B0-B8 and L2 (224, 240, 260, 300, 380, 456, 528, 600,
# 672, 800) is a multiple of 4; a resolution from the rule is rounded to the nearest one.
RESOLUTION_DIVISOR = 4


def round_filters(channels: int, width_multiplier: float, divisor: int = CHANNEL_DIVISOR) -> int:
    """Scale a channel count by the width multiplier: nearest multiple of ``divisor``, never below
    90 % of ``channels * width_multiplier``."""
    return int(make_divisible(channels * width_multiplier, divisor, round_limit=CHANNEL_ROUND_LIMIT))


def round_repeats(repeats: int, depth_multiplier: float) -> int:
    """Scale a stage's layer count by the depth multiplier, rounded up (any d > 1 deepens every stage)."""
    return int(math.ceil(depth_multiplier * repeats))


def round_resolution(base_resolution: int, resolution_multiplier: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """Scale the input size by the resolution multiplier, rounded to the nearest multiple of ``divisor``."""
    return max(divisor, int(round(base_resolution * resolution_multiplier / divisor)) * divisor)


def flops_factor(alpha: float, beta: float, gamma: float) -> float:
    """FLOPs growth per unit of phi: alpha * beta^2 * gamma^2 (the paper's Eq. 3 constraint term)."""
    return alpha * beta**2 * gamma**2


def satisfies_constraint(alpha: float, beta: float, gamma: float, target: float = 2.0, tolerance: float = 0.1) -> bool:
    """True when |alpha * beta^2 * gamma^2 - target| <= tolerance and alpha, beta, gamma >= 1 (Eq. 3)."""
    if min(alpha, beta, gamma) < 1.0:
        return False
    return abs(flops_factor(alpha, beta, gamma) - target) <= tolerance + 1e-9


@dataclass(frozen=True)
class CompoundScaling:
    """Coefficients alpha, beta, gamma and the compound coefficient phi; gives the three multipliers."""

    phi: float = 0.0
    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15

    @property
    def depth_multiplier(self) -> float:
        return self.alpha**self.phi

    @property
    def width_multiplier(self) -> float:
        return self.beta**self.phi

    @property
    def resolution_multiplier(self) -> float:
        return self.gamma**self.phi

    def resolution(self, base_resolution: int, divisor: int = RESOLUTION_DIVISOR) -> int:
        return round_resolution(base_resolution, self.resolution_multiplier, divisor)


def resolve_multipliers(
    phi: float = 0.0,
    alpha: float = 1.2,
    beta: float = 1.1,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
) -> tuple[float, float]:
    """(width, depth) multipliers: the baseline's own ``width_multiplier`` / ``depth_multiplier``
    (the B1-B7 settings, or a small CPU-sized baseline) scaled further by beta^phi and alpha^phi."""
    rule = CompoundScaling(phi=phi, alpha=alpha, beta=beta)
    return float(width_multiplier) * rule.width_multiplier, float(depth_multiplier) * rule.depth_multiplier


# Centre-crop fraction of the reference code's evaluation preprocessing (preprocessing.py).
EVAL_CROP_FRACTION = 0.875


@dataclass(frozen=True)
class EfficientNetSetting:
    """One row of the EfficientNet family: multipliers, native resolution, dropout, and Table 2's figures."""

    width: float
    depth: float
    resolution: int
    dropout: float
    paper_params_m: float
    paper_gmacs: float

    @property
    def crop_pct(self) -> float:
        """Share of the shorter side the evaluation centre crop keeps. The reference preprocessing
        pads the crop by round(size * (1 / 0.875 - 1)) pixels (``CROP_FRACTION = 0.875``): 224 of
        256 for B0, 600 of 686 for B7."""
        padding = round(self.resolution * (1 / EVAL_CROP_FRACTION - 1))
        return self.resolution / (self.resolution + padding)


# (width, depth, resolution, dropout) from the authors' reference code; params and multiply-adds
# ("FLOPs" in the paper, which counts multiply-adds) from the paper's Table 2.
EFFICIENTNET_FAMILY: dict[str, EfficientNetSetting] = {
    "b0": EfficientNetSetting(1.0, 1.0, 224, 0.2, 5.3, 0.39),
    "b1": EfficientNetSetting(1.0, 1.1, 240, 0.2, 7.8, 0.70),
    "b2": EfficientNetSetting(1.1, 1.2, 260, 0.3, 9.2, 1.0),
    "b3": EfficientNetSetting(1.2, 1.4, 300, 0.3, 12.0, 1.8),
    "b4": EfficientNetSetting(1.4, 1.8, 380, 0.4, 19.0, 4.2),
    "b5": EfficientNetSetting(1.6, 2.2, 456, 0.4, 30.0, 9.9),
    "b6": EfficientNetSetting(1.8, 2.6, 528, 0.5, 43.0, 19.0),
    "b7": EfficientNetSetting(2.0, 3.1, 600, 0.5, 66.0, 37.0),
}
