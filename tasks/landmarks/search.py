"""Nearest-neighbour search over L2-normalised descriptors with faiss: exact (flat inner product)
or approximate (HNSW graph, or an inverted file with ``nlist`` cells probed ``nprobe`` at a time),
and optional alpha query expansion (Radenović et al., TPAMI 2018) as re-ranking."""

from __future__ import annotations

import faiss
import numpy as np

INDEX_KINDS = ("flat", "hnsw", "ivf")


def build_index(descriptors: np.ndarray, kind: str = "flat", nlist: int = 1024, nprobe: int = 16, hnsw_m: int = 32):
    """A faiss index of ``descriptors`` (n, d) searched by inner product (cosine for unit vectors)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind {kind!r}: expected one of {INDEX_KINDS}")
    x = np.ascontiguousarray(descriptors, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = max(64, nprobe * 4)
    else:
        nlist = max(1, min(nlist, len(x) // 39))  # faiss wants ~39 training points per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(x)
        index.nprobe = min(nprobe, nlist)
    index.add(x)
    return index


def search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of the ``k`` nearest database items of each query (-1 ids pad short lists)."""
    k = min(int(k), index.ntotal)
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def alpha_query_expansion(
    index, queries: np.ndarray, database: np.ndarray, k: int, top: int = 2, alpha: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Search, replace each query by the sum of itself and its ``top`` neighbours weighted by
    similarity^alpha, renormalise and search again (alpha-QE re-ranking)."""
    sims, ids = search(index, queries, max(k, top))
    weights = np.clip(sims[:, :top], 0, None) ** alpha
    expanded = queries + (weights[..., None] * database[np.clip(ids[:, :top], 0, None)]).sum(1)
    expanded /= np.linalg.norm(expanded, axis=1, keepdims=True) + 1e-12
    return search(index, expanded, k)
