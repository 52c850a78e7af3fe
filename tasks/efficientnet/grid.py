"""Candidates of the (alpha, beta, gamma) grid search and the single-dimension baselines.

The paper fixes phi = 1 and searches alpha, beta, gamma >= 1 under alpha * beta^2 * gamma^2 ~= 2
(Sec. 3.3, step 1). Single-dimension scaling at the same FLOPs growth is the corner of that
constraint: depth only (2, 1, 1), width only (1, sqrt 2, 1), resolution only (1, 1, sqrt 2); these
are the baselines of the paper's Figure 3 / Figure 8 comparison, run by the same sweep."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tasks.efficientnet.scaling import flops_factor, satisfies_constraint

DIMENSIONS = ("compound", "depth", "width", "resolution")
GridSpec = str | float | Sequence[float]


@dataclass(frozen=True)
class Candidate:
    """One run of the sweep: the coefficients and the compound coefficient phi."""

    alpha: float
    beta: float
    gamma: float
    phi: float = 1.0

    @property
    def dimension(self) -> str:
        """Which dimensions it scales: ``compound``, or ``depth``/``width``/``resolution`` alone
        (``baseline`` when phi = 0 or all three are 1)."""
        scaled = [
            d
            for d, c in zip(("depth", "width", "resolution"), (self.alpha, self.beta, self.gamma))
            if not math.isclose(c, 1.0)
        ]
        if self.phi == 0 or not scaled:
            return "baseline"
        return scaled[0] if len(scaled) == 1 else "compound"

    @property
    def flops_factor(self) -> float:
        return flops_factor(self.alpha, self.beta, self.gamma)

    def overrides(self, prefix: str = "scaling") -> list[str]:
        """Hydra overrides that select this candidate in a config with a ``scaling`` block."""
        # repr keeps every digit, so sqrt(2) stays sqrt(2) and the FLOPs factor stays exact
        return [f"{prefix}.{key}={float(getattr(self, key))!r}" for key in ("phi", "alpha", "beta", "gamma")]


def grid_values(spec: GridSpec) -> list[float]:
    """Values of one coefficient: a list, a single number, or ``"start:stop:step"`` (stop included)."""
    if isinstance(spec, str):
        parts = [float(p) for p in spec.split(":")]
        if len(parts) != 3 or parts[2] <= 0:
            raise ValueError(f"grid spec {spec!r}: expected 'start:stop:step' with step > 0")
        start, stop, step = parts
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        return [round(start + i * step, 10) for i in range(count)]
    if isinstance(spec, (int, float)):
        return [float(spec)]
    return [float(v) for v in spec]


def compound_candidates(
    alpha: GridSpec,
    beta: GridSpec,
    gamma: GridSpec,
    target: float = 2.0,
    tolerance: float = 0.1,
    phi: float = 1.0,
) -> list[Candidate]:
    """Every grid triple with all coefficients >= 1 and |alpha*beta^2*gamma^2 - target| <= tolerance
    that scales at least two dimensions (one-dimension triples are the baselines, added apart)."""
    found = []
    for a in grid_values(alpha):
        for b in grid_values(beta):
            for g in grid_values(gamma):
                c = Candidate(a, b, g, phi)
                if satisfies_constraint(a, b, g, target, tolerance) and c.dimension == "compound":
                    found.append(c)
    return found


def single_dimension_candidates(dimensions: Iterable[str], target: float = 2.0, phi: float = 1.0) -> list[Candidate]:
    """Depth-, width- or resolution-only scaling with the same FLOPs growth ``target`` per unit phi."""
    corner = {
        "depth": Candidate(target, 1.0, 1.0, phi),
        "width": Candidate(1.0, math.sqrt(target), 1.0, phi),
        "resolution": Candidate(1.0, 1.0, math.sqrt(target), phi),
    }
    return [corner[d] for d in dimensions if d != "compound"]


def sweep_candidates(
    alpha: GridSpec,
    beta: GridSpec,
    gamma: GridSpec,
    phis: Sequence[float] = (1.0,),
    dimensions: Sequence[str] = ("compound",),
    target: float = 2.0,
    tolerance: float = 0.1,
    include_baseline: bool = False,
) -> list[Candidate]:
    """All runs of a sweep, in a fixed order (so job numbers, and hence resumption, are stable)."""
    unknown = set(dimensions) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown scaling dimensions {sorted(unknown)}; choose from {DIMENSIONS}")
    runs = [Candidate(1.0, 1.0, 1.0, 0.0)] if include_baseline else []
    for phi in phis:
        if "compound" in dimensions:
            runs += compound_candidates(alpha, beta, gamma, target, tolerance, phi)
        runs += single_dimension_candidates(dimensions, target, phi)
    if not runs:
        raise ValueError(
            f"no (alpha, beta, gamma) on the grid satisfies |alpha*beta^2*gamma^2 - {target}| <= "
            f"{tolerance}; widen the grid or the tolerance"
        )
    return runs
