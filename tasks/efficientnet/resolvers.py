"""The ``compound_resolution`` OmegaConf resolver: the input size the scaling rule picks.

Configs write ``data.image_size: ${compound_resolution:${scaling.base_resolution},${scaling.gamma},
${scaling.phi}}`` so the resolution reaches the data and the task from one place. Importing this
module (done by ``tasks.efficientnet`` and, for train.py, by ``core.resolvers``) registers it."""

from __future__ import annotations

from omegaconf import OmegaConf

from tasks.efficientnet.scaling import RESOLUTION_DIVISOR, round_resolution


def compound_resolution(
    base_resolution: int, gamma: float, phi: float, divisor: int = RESOLUTION_DIVISOR
) -> int:
    """round(base_resolution * gamma^phi) to a multiple of ``divisor`` (4: see scaling.py)."""
    return round_resolution(int(base_resolution), float(gamma) ** float(phi), int(divisor))


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("compound_resolution"):
        OmegaConf.register_new_resolver("compound_resolution", compound_resolution)


register_resolvers()
