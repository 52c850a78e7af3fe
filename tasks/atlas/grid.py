"""The atlas grid: bin the 2D layout into grid_size x grid_size cells and, per cell, average the
activations that fall in it, count them and tally their classes; sparse cells are dropped."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse


@dataclass
class AtlasGrid:
    """The kept cells of the grid. ``cells`` (M, 2) holds (row, col) with row 0 at the top
    (small y) and col 0 at the left (small x); ``cell_of_sample`` (N,) maps each activation to its
    kept cell, or -1 when its cell was dropped."""

    grid_size: int
    cells: np.ndarray
    counts: np.ndarray
    means: np.ndarray
    class_counts: np.ndarray
    cell_of_sample: np.ndarray

    def top_classes(self, k: int = 3) -> list[list[tuple[int, int]]]:
        """Per cell, up to ``k`` (class, count) pairs, most frequent first."""
        out = []
        for row in self.class_counts:
            order = np.argsort(-row, kind="stable")[:k]
            out.append([(int(c), int(row[c])) for c in order if row[c] > 0])
        return out


def cell_index(coords: np.ndarray, grid_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, col) of each point of ``coords`` in [0, 1]^2; the right/bottom edge (1.0) belongs to
    the last cell."""
    coords = np.asarray(coords, dtype=np.float64)
    col = np.clip(np.floor(coords[:, 0] * grid_size), 0, grid_size - 1).astype(np.int64)
    row = np.clip(np.floor(coords[:, 1] * grid_size), 0, grid_size - 1).astype(np.int64)
    return row, col


def grid_cells(
    coords: np.ndarray,
    activations: np.ndarray,
    grid_size: int,
    min_count: int = 1,
    labels: np.ndarray | None = None,
    num_classes: int | None = None,
    weights: np.ndarray | None = None,
    chunk_size: int = 65536,
) -> AtlasGrid:
    """Average ``activations`` (N, C; a memmap is read in chunks) per grid cell of ``coords``.

    Cells holding fewer than ``min_count`` activations are dropped. ``weights`` (N,), when given,
    restricts the average to rows with a positive weight (a class atlas keeps only the activations
    attributed to its class); counts then count those rows."""
    n = len(coords)
    if len(activations) != n:
        raise ValueError(f"{n} coordinates but {len(activations)} activations")
    if grid_size < 1 or min_count < 1:
        raise ValueError(f"grid_size={grid_size} and min_count={min_count} must be >= 1")
    row, col = cell_index(coords, grid_size)
    flat = row * grid_size + col
    keep_row = np.ones(n, bool) if weights is None else np.asarray(weights) > 0
    counts_all = np.bincount(flat[keep_row], minlength=grid_size * grid_size)
    kept_flat = np.flatnonzero(counts_all >= min_count)
    slot = np.full(grid_size * grid_size, -1, np.int64)
    slot[kept_flat] = np.arange(len(kept_flat))
    cell_of_sample = np.where(keep_row, slot[flat], -1)

    m, channels = len(kept_flat), activations.shape[1]
    sums = np.zeros((m, channels), np.float64)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        target = cell_of_sample[start:stop]
        used = np.flatnonzero(target >= 0)
        if len(used) == 0:
            continue
        assign = sparse.csr_matrix((np.ones(len(used)), (target[used], used)), shape=(m, stop - start))
        sums += assign @ np.asarray(activations[start:stop], dtype=np.float64)
    counts = counts_all[kept_flat]
    means = (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)

    num_classes = num_classes or (int(labels.max()) + 1 if labels is not None and len(labels) else 0)
    class_counts = np.zeros((m, num_classes), np.int64)
    if labels is not None and m and num_classes:
        used = cell_of_sample >= 0
        pair = cell_of_sample[used] * num_classes + np.asarray(labels)[used]
        class_counts = np.bincount(pair, minlength=m * num_classes).reshape(m, num_classes)
    cells = np.stack([kept_flat // grid_size, kept_flat % grid_size], 1)
    return AtlasGrid(grid_size, cells, counts, means, class_counts, cell_of_sample)
