"""Detect-to-Retrieve regional aggregation (Teichmann et al., "Detect-to-Retrieve: Efficient
Regional Aggregation for Image Search", CVPR 2019).

An image's local descriptors (DELF-like: feature-map cells chosen by a learned attention score,
``select_local_features``) are grouped by region: the whole image plus each detected landmark
box. With a codebook C (k-means, faiss), each local descriptor x is assigned to its nearest word
q(x) and contributes the residual r(x) = x - q(x).

- R-VLAD (Sec. 4.1): a VLAD vector per region, V_R = [sum_{x in R, q(x)=c} r(x)]_c, L2-normalised;
  the image vector is the L2-normalised sum over regions, sum_R V_R; similarity is the dot product,
  so a whole index is searched with a faiss inner-product index.
- R-ASMK (Sec. 4.2): per region and word, the aggregated residual V_R(c) = sum_{x in R, q(x)=c} r(x)
  normalised, phi_R(c) = V_R(c)/||V_R(c)||; the image keeps per word phi(c) = sum_R phi_R(c),
  renormalised (a word only where some region uses it). R-ASMK* (the paper's choice, ``binary``)
  keeps only the signs, b(c) = sign(phi(c)), compared by u = 1 - 2 h(b_X(c), b_Y(c)) / d (h the
  Hamming distance), as ASMK* (Tolias et al., ICCV 2013). Two images are compared with the selective
  match kernel K(X, Y) = gamma(X) gamma(Y) sum_{c in X and Y} sigma_alpha(u_c),
  sigma_alpha(u) = sign(u)|u|^alpha if u > tau else 0, gamma(X) = (sum_c sigma_alpha(1))^(-1/2)
  = (number of words of X)^(-1/2); alpha = 3, tau = 0 as in D2R. A whole index is searched with an
  inverted file over the visual words (``ASMKInvertedFile``): a query only visits the images that
  share one of its words."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from tasks.landmarks import search as search_lib

AGGREGATIONS = ("rasmk", "rvlad")


def fit_codebook(local: np.ndarray, size: int, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """k-means centroids (size, d) of local descriptors with faiss."""
    x = np.ascontiguousarray(local, dtype=np.float32)
    size = min(int(size), len(x))
    kmeans = faiss.Kmeans(x.shape[1], size, niter=iterations, seed=seed, verbose=False)
    kmeans.train(x)
    return kmeans.centroids


def _normalise(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=axis, keepdims=True) + 1e-12)


def select_local_features(
    local_map: np.ndarray, scores: np.ndarray | None = None, max_features: int | None = None, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The local features of one (C, h, w) map: (descriptors (n, C) L2-normalised, points (n, 2)
    relative x, y of the cell centres). With attention ``scores`` (h, w), as DELF: the
    ``max_features`` best-scored cells whose score is at least ``threshold`` (the best cell always
    stays); without, every cell."""
    c, h, w = local_map.shape
    ys, xs = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    descriptors = local_map.reshape(c, h * w).T.astype(np.float32)
    if scores is not None:
        flat = np.asarray(scores, dtype=np.float32).ravel()
        order = np.argsort(-flat, kind="stable")
        keep = order[flat[order] >= threshold]
        if len(keep) == 0:
            keep = order[:1]
        if max_features:
            keep = keep[: int(max_features)]
        descriptors, points = descriptors[keep], points[keep]
    return _normalise(descriptors), points


def region_members(points: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """The indices of the local features (``points``: (n, 2) relative x, y) in each region: the
    whole image first, then each box (x1, y1, x2, y2 relative); a box holding no feature keeps the
    one nearest its centre."""
    cx, cy = np.asarray(points, dtype=np.float64).reshape(-1, 2).T
    regions = [np.arange(len(cx))]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        inside = np.flatnonzero((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2))
        if len(inside) == 0:
            inside = np.array([np.argmin((cx - (x1 + x2) / 2) ** 2 + (cy - (y1 + y2) / 2) ** 2)])
        regions.append(inside)
    return regions


@dataclass
class ASMKImage:
    """An image under R-ASMK: its visual words (sorted) and one descriptor per word: a unit vector
    (float32, ASMK) or its packed sign bits (uint8, ASMK*)."""

    words: np.ndarray  # (m,) int64
    vectors: np.ndarray  # (m, d) float32 or (m, ceil(d/8)) uint8


class RegionalAggregator:
    """R-VLAD and R-ASMK(*) of images given their local features, their positions and landmark boxes."""

    def __init__(self, codebook: np.ndarray, alpha: float = 3.0, tau: float = 0.0, binary: bool = True) -> None:
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self.dim = self.codebook.shape[1]
        self.alpha, self.tau, self.binary = alpha, tau, binary
        self.quantizer = faiss.IndexFlatL2(self.dim)
        self.quantizer.add(self.codebook)

    def _assign(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(local, dtype=np.float32)
        _, words = self.quantizer.search(x, 1)
        words = words[:, 0]
        return words, x - self.codebook[words]

    def _region_residuals(self, local: np.ndarray, points: np.ndarray, boxes: np.ndarray):
        words, residuals = self._assign(local)
        for members in region_members(points, boxes):
            per_word = np.zeros((len(self.codebook), self.dim), dtype=np.float32)
            np.add.at(per_word, words[members], residuals[members])
            used = np.zeros(len(self.codebook), dtype=bool)
            used[words[members]] = True
            yield per_word, used

    def rvlad(self, local: np.ndarray, points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The R-VLAD vector (k * d,) of one image (local: (n, d) L2-normalised descriptors)."""
        total = 0.0
        for per_word, _ in self._region_residuals(local, points, boxes):
            total = total + _normalise(per_word.ravel())
        return _normalise(np.asarray(total, dtype=np.float32))

    def rasmk(self, local: np.ndarray, points: np.ndarray, boxes: np.ndarray) -> ASMKImage:
        """The R-ASMK (or, ``binary``, R-ASMK*) representation of one image."""
        total = np.zeros((len(self.codebook), self.dim), dtype=np.float32)
        any_used = np.zeros(len(self.codebook), dtype=bool)
        for per_word, used in self._region_residuals(local, points, boxes):
            total[used] += _normalise(per_word[used])
            any_used |= used
        words = np.flatnonzero(any_used).astype(np.int64)
        vectors = _normalise(total[words]).astype(np.float32)
        if self.binary:
            vectors = np.packbits(vectors > 0, axis=1)
        return ASMKImage(words, vectors)

    def represent(self, aggregation: str, local: np.ndarray, points: np.ndarray, boxes: np.ndarray):
        """R-VLAD vector or R-ASMK image, as ``aggregation`` says."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation {aggregation!r}: expected one of {AGGREGATIONS}")
        return (self.rasmk if aggregation == "rasmk" else self.rvlad)(local, points, boxes)

    def word_similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """u between per-word descriptors, row by row (broadcast): the dot product of unit vectors,
        or for sign bits 1 - 2 h / d, which is the dot product of the +-1 vectors divided by d."""
        if not self.binary:
            return np.einsum("ij,ij->i", *np.broadcast_arrays(a, b))
        differing = np.unpackbits(np.bitwise_xor(a, b), axis=-1, count=self.dim).sum(-1)
        return 1.0 - 2.0 * differing / self.dim

    def selective(self, u: np.ndarray) -> np.ndarray:
        """sigma_alpha(u) = sign(u)|u|^alpha where u > tau, else 0."""
        return np.where(u > self.tau, np.sign(u) * np.abs(u) ** self.alpha, 0.0)

    def gamma(self, image: ASMKImage) -> float:
        """The self-similarity normalisation (sum_c sigma_alpha(1))^(-1/2); 0 for an image without words."""
        total = float(self.selective(np.ones(len(image.words))).sum())
        return 1.0 / np.sqrt(total) if total > 0 else 0.0

    def asmk_similarity(self, x: ASMKImage, y: ASMKImage) -> float:
        """The normalised selective match kernel K(X, Y) of two images."""
        common, ix, iy = np.intersect1d(x.words, y.words, return_indices=True)
        if len(common) == 0:
            return 0.0
        u = self.word_similarity(x.vectors[ix], y.vectors[iy])
        return float(self.gamma(x) * self.gamma(y) * self.selective(u).sum())


class ASMKInvertedFile:
    """Whole-index R-ASMK(*) search through an inverted file over the visual words (faiss
    ``ArrayInvertedLists``): word c's list holds (image number, phi(c) or its sign bits) of every
    database image that uses c, so a query's kernel with every image is summed over the query's
    words' lists only (Teichmann et al., Sec. 4.2; Tolias et al., ICCV 2013)."""

    def __init__(self, aggregator: RegionalAggregator, images: list[ASMKImage]) -> None:
        self.aggregator = aggregator
        self.size = len(images)
        sample = next((im.vectors for im in images if len(im.words)), None)
        row = np.zeros((1, aggregator.dim), np.float32) if sample is None else sample[:1]
        self.code_dtype, self.code_width = row.dtype, row.shape[1]
        self.code_size = row.view(np.uint8).shape[1]
        self.lists = faiss.ArrayInvertedLists(len(aggregator.codebook), self.code_size)
        self.gamma = np.array([aggregator.gamma(im) for im in images], dtype=np.float64)
        if not any(len(im.words) for im in images):
            return
        words = np.concatenate([im.words for im in images])
        owners = np.concatenate([np.full(len(im.words), n, np.int64) for n, im in enumerate(images)])
        codes = np.concatenate([np.ascontiguousarray(im.vectors).view(np.uint8) for im in images if len(im.words)])
        order = np.argsort(words, kind="stable")
        words, owners, codes = words[order], owners[order], np.ascontiguousarray(codes[order])
        starts = np.flatnonzero(np.r_[True, words[1:] != words[:-1]])
        for start, end in zip(starts, np.r_[starts[1:], len(words)]):
            ids, block = np.ascontiguousarray(owners[start:end]), np.ascontiguousarray(codes[start:end])
            self.lists.add_entries(int(words[start]), int(end - start), faiss.swig_ptr(ids), faiss.swig_ptr(block))

    def posting(self, word: int) -> tuple[np.ndarray, np.ndarray]:
        """(image numbers, descriptors) of a word's list."""
        n = self.lists.list_size(int(word))
        if n == 0:
            return np.zeros(0, np.int64), np.zeros((0, self.code_width), self.code_dtype)
        ids = faiss.rev_swig_ptr(self.lists.get_ids(int(word)), n).copy()
        codes = faiss.rev_swig_ptr(self.lists.get_codes(int(word)), n * self.code_size).copy()
        return ids, codes.reshape(n, self.code_size).view(self.code_dtype)

    def scores(self, query: ASMKImage) -> np.ndarray:
        """K(query, X) for every database image X (0 where no word is shared)."""
        total = np.zeros(self.size, dtype=np.float64)
        for word, vector in zip(query.words, query.vectors):
            ids, codes = self.posting(word)
            if len(ids):
                np.add.at(total, ids, self.aggregator.selective(self.aggregator.word_similarity(vector[None], codes)))
        return total * self.gamma * self.aggregator.gamma(query)

    def search(self, queries: list[ASMKImage], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids) of the ``k`` best database images of each query, best first; images
        the query does not match (kernel 0: no shared word passes the selectivity) are left out
        (id -1, similarity -inf)."""
        k = min(int(k), self.size)
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for n, query in enumerate(queries):
            scores = self.scores(query)
            candidates = np.flatnonzero(scores != 0)
            best = candidates[np.lexsort((candidates, -scores[candidates]))][:k]
            sims[n, : len(best)], ids[n, : len(best)] = scores[best], best
        return sims, ids


class RegionalIndex:
    """A database's regional descriptors, searched over the whole database (R-VLAD: a faiss
    inner-product index; R-ASMK: the inverted file) or scored on given shortlists (re-ranking)."""

    def __init__(self, aggregator: RegionalAggregator, aggregation: str, database: list, index_kind: str = "flat"):
        self.aggregator, self.aggregation, self.database = aggregator, aggregation, database
        if aggregation == "rasmk":
            self.inverted = ASMKInvertedFile(aggregator, database)
        else:
            self.vectors = np.stack(database).astype(np.float32)
            self.index = search_lib.build_index(self.vectors, index_kind)

    def search(self, queries: list, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, ids) of the ``k`` best database images per query over the whole database."""
        if self.aggregation == "rasmk":
            return self.inverted.search(queries, k)
        return search_lib.search(self.index, np.stack(queries), k)

    def similarity(self, queries: list, ids: np.ndarray) -> np.ndarray:
        """(Q, K) regional similarities of each query with its shortlist ``ids`` (-1: 0)."""
        out = np.zeros(ids.shape, dtype=np.float32)
        for a, (query, row) in enumerate(zip(queries, ids)):
            valid = row >= 0
            if self.aggregation == "rasmk":
                out[a, valid] = self.inverted.scores(query)[row[valid]]
            else:
                out[a, valid] = self.vectors[row[valid]] @ query
        return out
