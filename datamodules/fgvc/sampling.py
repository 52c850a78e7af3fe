"""Samplers for long-tailed training sets: instance (as drawn), square-root and class-balanced.

A class with n_c training images is drawn with probability proportional to n_c^q: q = 1 is the
data's own prior, q = 1/2 the square-root sampling of Mahajan et al. (ECCV 2018), q = 0 class-balanced
sampling (every class equally often). Each image then carries weight n_c^q / n_c."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

POWERS = {"instance": 1.0, "sqrt": 0.5, "class_balanced": 0.0}


def sampling_weights(labels: Sequence[int], mode: str) -> np.ndarray:
    """Per-image weights whose class totals are proportional to n_c^q (see module docstring)."""
    if mode not in POWERS:
        raise ValueError(f"sampler={mode!r}: choose one of {sorted(POWERS)}")
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels)
    per_class = np.zeros(len(counts))
    present = counts > 0
    per_class[present] = counts[present].astype(float) ** (POWERS[mode] - 1.0)
    return per_class[labels]


def class_sampler(labels: Sequence[int], mode: str, seed: int = 0, num_samples: int | None = None):
    """A WeightedRandomSampler (with replacement, one epoch = as many draws as images), or None for
    ``instance`` (plain shuffling). Lightning wraps it for DDP (DistributedSamplerWrapper)."""
    if mode == "instance":
        return None
    weights = torch.as_tensor(sampling_weights(labels, mode), dtype=torch.double)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)
