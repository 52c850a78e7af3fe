"""The 2D layout of the activations: UMAP with the cosine metric, as in the paper, normalized to
the unit square as the atlas notebooks do (``normalize_layout``), so a grid can be laid over it;
and the whitening matrix of the activations that the icons are rendered with."""

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
    reducer = umap.UMAP(
        n_neighbors=neighbours,
        min_dist=min_dist,
        metric=metric,
        n_components=2,
        random_state=seed,
        n_jobs=1,
        low_memory=True,
    )
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
    return normalize_layout(coords)


def normalize_layout(
    layout: np.ndarray, min_percentile: float = 1, max_percentile: float = 99, relative_margin: float = 0.1
) -> np.ndarray:
    """The notebooks' ``normalize_layout``: per axis, take the 1st and 99th percentiles, widen them
    by a 10 % margin (``mins -= m * (maxs - mins)``, then ``maxs += m * (maxs - mins)`` with the
    already-lowered ``mins``), clip every point into that range, and scale the clipped points to
    [0, 1] by their own minimum and maximum. Outliers land on the border instead of squeezing the
    grid."""
    layout = np.asarray(layout, dtype=np.float64)
    mins = np.percentile(layout, min_percentile, axis=0)
    maxs = np.percentile(layout, max_percentile, axis=0)
    mins = mins - relative_margin * (maxs - mins)
    maxs = maxs + relative_margin * (maxs - mins)
    clipped = np.clip(layout, mins, maxs)
    clipped = clipped - clipped.min(axis=0)
    span = clipped.max(axis=0)
    return (clipped / np.where(span > 0, span, 1.0)).astype(np.float32)


def whitening_matrix(activations: np.ndarray, chunk_size: int = 65536) -> np.ndarray:
    """S = inv(A^T A / N), the notebooks' ``whiten``: the inverse of the (uncentred) second-moment
    matrix of the activations (N, C; a memmap is read in chunks). An icon is rendered for S v, not
    v, so directions that are common in the data count less. A singular matrix (a channel that is
    never active) falls back to the pseudo-inverse, with a warning."""
    n, channels = activations.shape
    gram = np.zeros((channels, channels), np.float64)
    for start in range(0, n, chunk_size):
        block = np.asarray(activations[start : start + chunk_size], dtype=np.float64)
        gram += block.T @ block
    correlation = (gram / max(n, 1)).astype(np.float32)
    try:
        if np.linalg.matrix_rank(correlation) < channels:
            raise np.linalg.LinAlgError("rank deficient")
        return np.linalg.inv(correlation).astype(np.float32)
    except np.linalg.LinAlgError:
        log.warning(
            "the activations' second-moment matrix (%d channels) is singular; whitening with its pseudo-inverse",
            channels,
        )
        return np.linalg.pinv(correlation).astype(np.float32)


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
