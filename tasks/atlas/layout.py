"""The 2D layout of the activations: UMAP with the cosine metric, as in the paper, normalized to
the unit square so a grid can be laid over it."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def umap_layout(
    activations: np.ndarray,
    n_neighbors: int = 20,
    min_dist: float = 0.01,
    metric: str = "cosine",
    fit_size: int | None = None,
    chunk_size: int = 65536,
    seed: int = 0,
) -> np.ndarray:
    """(N, 2) coordinates in [0, 1] of the rows of ``activations`` (may be a memmap).

    With ``fit_size`` < N, UMAP is fitted on a seeded random subset and the other rows are placed
    with ``transform`` chunk by chunk, which bounds memory and time for a million activations."""
    import umap  # imported here: numba compilation makes the import slow

    n = len(activations)
    if n < 3:
        raise ValueError(f"UMAP needs at least 3 activations, got {n}")
    neighbours = min(n_neighbors, n - 1)
    reducer = umap.UMAP(n_neighbors=neighbours, min_dist=min_dist, metric=metric, n_components=2,
                        random_state=seed, n_jobs=1, low_memory=True)
    if fit_size is None or fit_size >= n:
        coords = reducer.fit_transform(np.asarray(activations, dtype=np.float32))
    else:
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(n, size=fit_size, replace=False))
        reducer.fit(np.asarray(activations[fit_rows], dtype=np.float32))
        coords = np.empty((n, 2), np.float32)
        for start in range(0, n, chunk_size):
            stop = min(n, start + chunk_size)
            coords[start:stop] = reducer.transform(np.asarray(activations[start:stop], dtype=np.float32))
    return normalize_unit_square(coords)


def normalize_unit_square(coords: np.ndarray, quantile: float = 0.0) -> np.ndarray:
    """Scale (N, 2) coordinates into [0, 1] per axis; with ``quantile`` > 0 the extreme points
    beyond that quantile are clipped first, so a few outliers do not squeeze the grid."""
    coords = np.asarray(coords, dtype=np.float64)
    low = np.quantile(coords, quantile, axis=0) if quantile else coords.min(0)
    high = np.quantile(coords, 1 - quantile, axis=0) if quantile else coords.max(0)
    span = np.where(high - low > 0, high - low, 1.0)
    return np.clip((coords - low) / span, 0.0, 1.0).astype(np.float32)


def knn_accuracy(coords: np.ndarray, labels: np.ndarray, k: int = 5, max_points: int = 20000, seed: int = 0) -> float:
    """Leave-one-out k-nearest-neighbour accuracy of ``labels`` from the 2D ``coords``: how well
    the layout separates the classes (chance is the largest class's share)."""
    from scipy.spatial import cKDTree

    coords, labels = np.asarray(coords), np.asarray(labels)
    if len(coords) > max_points:
        rows = np.random.default_rng(seed).choice(len(coords), max_points, replace=False)
        coords, labels = coords[rows], labels[rows]
    _, neighbours = cKDTree(coords).query(coords, k=k + 1)
    own = neighbours == np.arange(len(coords))[:, None]
    own[~own.any(1), -1] = True  # the point itself was crowded out by duplicates: drop the farthest
    votes = labels[neighbours[~own].reshape(len(coords), k)]
    predicted = np.array([np.bincount(row).argmax() for row in votes])
    return float((predicted == labels).mean())
