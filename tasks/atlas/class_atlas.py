"""Class activation atlases as the "class-activation-atlas" notebook draws them: keep the samples
whose attribution favours one class (its winners, and its top positive attributions), lay those out
with a fresh UMAP, and grid that layout on its own, smaller grid."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.atlas.grid import AtlasGrid, grid_cells
from tasks.atlas.layout import umap_layout


def winning_indices(attributions: np.ndarray, class_index: int) -> np.ndarray:
    """Rows whose largest attribution goes to ``class_index`` (the notebook's
    ``get_winning_indices``: ``class_id in argsort(-attr)[0:1]``)."""
    return np.flatnonzero(np.argmax(np.asarray(attributions), axis=1) == class_index)


def top_indices(attributions: np.ndarray, class_index: int, n: int = 3000) -> np.ndarray:
    """The ``n`` rows with the highest attribution to ``class_index``, keeping the positive ones
    (``get_top_indices``)."""
    column = np.asarray(attributions[:, class_index])
    order = np.argsort(-column, kind="stable")[:n]
    return order[column[order] > 0]


def class_sample_indices(attributions: np.ndarray, class_index: int, top_n: int = 3000) -> np.ndarray:
    """``concatenate((top_indices, winning_indices))`` as in the notebook: a row that is both
    appears twice, so it weighs twice in the layout and in its cell's average."""
    return np.concatenate([top_indices(attributions, class_index, top_n), winning_indices(attributions, class_index)])


def cell_attribution(grid: AtlasGrid, attribution: np.ndarray) -> np.ndarray:
    """Mean attribution to a class of the activations in each kept cell of ``grid``, (M,)."""
    kept = grid.cell_of_sample >= 0
    sums = np.bincount(grid.cell_of_sample[kept], weights=attribution[kept], minlength=len(grid.cells))
    return sums / np.maximum(grid.counts, 1)


@dataclass
class ClassAtlas:
    """One class's atlas: the rows it was built from (``indices``, duplicates included), their own
    layout (``coords``), its grid and the mean attribution to the class of each kept cell."""

    class_index: int
    indices: np.ndarray
    coords: np.ndarray
    grid: AtlasGrid
    attribution: np.ndarray

    def enrichment(self, labels: np.ndarray) -> dict[str, float]:
        """How much the class atlas is about its class: the share of its samples (in kept cells)
        whose image has the class's label (``purity``), that share over all collected samples
        (``base_rate``), and their ratio (``enrichment``; 1 = no better than chance)."""
        labels = np.asarray(labels)
        kept = self.indices[self.grid.cell_of_sample >= 0]
        purity = float((labels[kept] == self.class_index).mean()) if len(kept) else 0.0
        base = float((labels == self.class_index).mean()) if len(labels) else 0.0
        return {
            "purity": purity,
            "base_rate": base,
            "enrichment": purity / base if base > 0 else 0.0,
            "num_samples": int(len(self.indices)),
            "num_in_cells": int(len(kept)),
        }


def class_atlas(
    activations: np.ndarray,
    attributions: np.ndarray,
    labels: np.ndarray,
    class_index: int,
    top_n: int = 3000,
    grid_size: int = 8,
    min_count: int = 5,
    umap: dict[str, Any] | None = None,
    num_classes: int | None = None,
    seed: int = 0,
) -> ClassAtlas:
    """The notebook's single-class atlas: samples of ``class_sample_indices``, a fresh UMAP of their
    activations (``umap``: keyword arguments of ``umap_layout``, normalized by ``normalize_layout``),
    a ``grid_size`` grid keeping cells with at least ``min_count`` samples (notebook: more than 4)."""
    indices = class_sample_indices(attributions, class_index, top_n)
    if len(indices) < 3:
        raise ValueError(f"class {class_index}: only {len(indices)} samples attribute to it; a class atlas needs 3")
    acts = np.asarray(activations[np.sort(np.unique(indices))], dtype=np.float32)
    rows = np.searchsorted(np.sort(np.unique(indices)), indices)
    acts = acts[rows]  # in the notebook's order, duplicates included
    coords = umap_layout(acts, seed=seed, **(umap or {}))
    grid = grid_cells(coords, acts, grid_size, min_count, np.asarray(labels)[indices], num_classes)
    strength = cell_attribution(grid, np.asarray(attributions[indices, class_index], dtype=np.float64))
    return ClassAtlas(class_index, indices, coords, grid, strength)


def attribution_agreement(
    grid: AtlasGrid, labels: np.ndarray, attribution: np.ndarray, class_index: int, top_cells: int = 5
) -> dict[str, float]:
    """Do the cells of the full atlas with the highest mean attribution to a class hold that
    class's images? Returns the share of the class's label among the activations of those cells
    (``purity``), the share over the whole atlas (``chance``), and the share of the class's
    activations that fall in those cells (``recall``) versus the share of all activations there
    (``coverage``)."""
    strength = cell_attribution(grid, attribution)
    top = np.argsort(-strength, kind="stable")[:top_cells]
    in_top = np.isin(grid.cell_of_sample, top)
    is_class = np.asarray(labels) == class_index
    kept = grid.cell_of_sample >= 0
    return {
        "cells": [int(c) for c in top],
        "purity": float(is_class[in_top].mean()) if in_top.any() else 0.0,
        "chance": float(is_class[kept].mean()) if kept.any() else 0.0,
        "recall": float(in_top[is_class].mean()) if is_class.any() else 0.0,
        "coverage": float(in_top[kept].mean()) if kept.any() else 0.0,
    }
