"""OmegaConf resolvers of the EfficientNet configs (registered lazily by ``core.resolvers`` from the
list in ``core.registry``; importing this module registers nothing).

- ``${compound_resolution:base,gamma,phi}``: the input size the scaling rule picks, so the resolution
  reaches the data and the task from one place.
- ``${efficientnet_variant:b3,resolution}``: a fact of a B0-B7 variant (``width``, ``depth``,
  ``resolution``, ``dropout``, ``crop_pct``) from ``scaling.EFFICIENTNET_FAMILY``, the one place
  those facts live; the timm-registered ``compound_scaled_efficientnet_b*`` read the same table."""

from __future__ import annotations

from tasks.efficientnet.scaling import EFFICIENTNET_FAMILY, RESOLUTION_DIVISOR, round_resolution


def compound_resolution(base_resolution: int, gamma: float, phi: float, divisor: int = RESOLUTION_DIVISOR) -> int:
    """round(base_resolution * gamma^phi) to a multiple of ``divisor`` (4: see scaling.py)."""
    return round_resolution(int(base_resolution), float(gamma) ** float(phi), int(divisor))


def efficientnet_variant(variant: str, key: str) -> float | int:
    """``key`` of EfficientNet-``variant`` (b0..b7): width, depth, resolution, dropout or crop_pct."""
    name = str(variant).lower().removeprefix("efficientnet_").removeprefix("efficientnet-")
    if name not in EFFICIENTNET_FAMILY:
        raise KeyError(f"efficientnet variant {variant!r}: choose one of {sorted(EFFICIENTNET_FAMILY)}")
    setting = EFFICIENTNET_FAMILY[name]
    if not hasattr(setting, key):
        raise KeyError(
            f"efficientnet variant facts have no {key!r}; choose width, depth, resolution, dropout, crop_pct"
        )
    return getattr(setting, key)
