"""Class activation atlases (the paper's "red fox" and "great white shark" views): the part of the
atlas whose activations push one class's logit, by activation x gradient attribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tasks.atlas.grid import AtlasGrid, grid_cells


def top_attributed_class(attr_classes: np.ndarray, attr_values: np.ndarray) -> np.ndarray:
    """Per activation, the class its attribution favours most (-1 when no attribution is positive)."""
    best = np.argmax(attr_values, axis=1)
    rows = np.arange(len(attr_values))
    return np.where(attr_values[rows, best] > 0, attr_classes[rows, best], -1)


def cell_attribution(grid: AtlasGrid, attribution: np.ndarray) -> np.ndarray:
    """Mean attribution to a class of the activations in each kept cell of ``grid``, (M,)."""
    kept = grid.cell_of_sample >= 0
    sums = np.bincount(grid.cell_of_sample[kept], weights=attribution[kept], minlength=len(grid.cells))
    return sums / np.maximum(grid.counts, 1)


@dataclass
class ClassAtlas:
    """The cells of one class's atlas, strongest attribution first, with the mean attribution of
    each (``attribution``) and the grid restricted to that class's activations (``grid``)."""

    class_index: int
    grid: AtlasGrid
    attribution: np.ndarray


def class_atlas(coords: np.ndarray, activations: np.ndarray, labels: np.ndarray, attr_classes: np.ndarray,
                attr_values: np.ndarray, class_index: int, grid_size: int, min_count: int = 1,
                max_cells: int | None = None, num_classes: int | None = None) -> ClassAtlas:
    """Keep the activations whose strongest attribution goes to ``class_index`` and grid them on
    the full atlas's layout; cells are sorted by mean attribution to the class (top ``max_cells``)."""
    hit = attr_classes == class_index
    attribution = np.where(hit, attr_values, 0.0).sum(1)
    selected = (top_attributed_class(attr_classes, attr_values) == class_index).astype(np.float64)
    grid = grid_cells(coords, activations, grid_size, min_count, labels, num_classes, weights=selected)
    strength = cell_attribution(grid, attribution * selected)
    order = np.argsort(-strength, kind="stable")[:max_cells]
    remap = np.full(len(grid.cells), -1, np.int64)
    remap[order] = np.arange(len(order))
    cell_of_sample = np.full_like(grid.cell_of_sample, -1)
    kept = grid.cell_of_sample >= 0
    cell_of_sample[kept] = remap[grid.cell_of_sample[kept]]
    grid = AtlasGrid(grid.grid_size, grid.cells[order], grid.counts[order], grid.means[order],
                     grid.class_counts[order], cell_of_sample)
    return ClassAtlas(class_index, grid, strength[order])


def attribution_agreement(grid: AtlasGrid, labels: np.ndarray, attribution: np.ndarray, class_index: int,
                          top_cells: int = 5) -> dict[str, float]:
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
