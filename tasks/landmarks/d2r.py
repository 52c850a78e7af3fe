"""Detect-to-Retrieve regional aggregation (Teichmann et al., "Detect-to-Retrieve: Efficient
Regional Aggregation for Image Search", CVPR 2019).

An image's local descriptors are grouped by region: the whole image plus each detected landmark
box. With a codebook C (k-means, faiss), each local descriptor x is assigned to its nearest word
q(x) and contributes the residual r(x) = x - q(x).

- R-VLAD (Sec. 4.1): a VLAD vector per region, V_R = [sum_{x in R, q(x)=c} r(x)]_c, L2-normalised;
  the image vector is the L2-normalised sum over regions, sum_R V_R; similarity is the dot product.
- R-ASMK (Sec. 4.2): per region and word, the aggregated residual V_R(c) = sum_{x in R, q(x)=c} r(x)
  normalised, phi_R(c) = V_R(c)/||V_R(c)||; the image keeps per word phi(c) = sum_R phi_R(c),
  renormalised (a word only where some region uses it). Two images are compared with the selective
  match kernel of ASMK (Tolias et al., ICCV 2013):
  K(X, Y) = gamma(X) gamma(Y) sum_{c in X and Y} sigma_alpha(phi_X(c) . phi_Y(c)),
  sigma_alpha(u) = sign(u)|u|^alpha if u > tau else 0, gamma(X) = (sum_c sigma_alpha(1))^(-1/2)
  = (number of words of X)^(-1/2) (self-similarity normalisation); alpha = 3, tau = 0 as in ASMK."""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np


def fit_codebook(local: np.ndarray, size: int, seed: int = 0, iterations: int = 20) -> np.ndarray:
    """k-means centroids (size, d) of local descriptors with faiss."""
    x = np.ascontiguousarray(local, dtype=np.float32)
    size = min(int(size), len(x))
    kmeans = faiss.Kmeans(x.shape[1], size, niter=iterations, seed=seed, verbose=False)
    kmeans.train(x)
    return kmeans.centroids


def region_members(shape: tuple[int, int], boxes: np.ndarray) -> list[np.ndarray]:
    """For a (h, w) feature map, the flat indices of the cells whose centres lie in each region:
    the whole image first, then each box (x1, y1, x2, y2 relative); an empty box keeps its
    nearest cell."""
    h, w = shape
    ys, xs = (np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w
    cy, cx = np.meshgrid(ys, xs, indexing="ij")
    cy, cx = cy.ravel(), cx.ravel()
    regions = [np.arange(h * w)]
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        inside = np.flatnonzero((cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2))
        if len(inside) == 0:
            inside = np.array([np.argmin((cx - (x1 + x2) / 2) ** 2 + (cy - (y1 + y2) / 2) ** 2)])
        regions.append(inside)
    return regions


def _normalise(v: np.ndarray, axis: int = -1) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=axis, keepdims=True) + 1e-12)


@dataclass
class ASMKImage:
    """An image under R-ASMK: its visual words and one unit vector phi(c) per word."""

    words: np.ndarray  # (m,) int
    vectors: np.ndarray  # (m, d) float32


class RegionalAggregator:
    """R-VLAD and R-ASMK of images given their local feature maps and landmark boxes."""

    def __init__(self, codebook: np.ndarray, alpha: float = 3.0, tau: float = 0.0) -> None:
        self.codebook = np.ascontiguousarray(codebook, dtype=np.float32)
        self.alpha, self.tau = alpha, tau
        self.quantizer = faiss.IndexFlatL2(self.codebook.shape[1])
        self.quantizer.add(self.codebook)

    def _assign(self, local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(local, dtype=np.float32)
        _, words = self.quantizer.search(x, 1)
        words = words[:, 0]
        return words, x - self.codebook[words]

    def _region_residuals(self, local_map: np.ndarray, boxes: np.ndarray):
        c, h, w = local_map.shape
        local = _normalise(local_map.reshape(c, h * w).T)
        words, residuals = self._assign(local)
        for members in region_members((h, w), boxes):
            per_word = np.zeros((len(self.codebook), c), dtype=np.float32)
            np.add.at(per_word, words[members], residuals[members])
            used = np.zeros(len(self.codebook), dtype=bool)
            used[words[members]] = True
            yield per_word, used

    def rvlad(self, local_map: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The R-VLAD vector (k * d,) of one image (local_map: (C, h, w))."""
        total = 0.0
        for per_word, _ in self._region_residuals(local_map, boxes):
            total = total + _normalise(per_word.ravel())
        return _normalise(np.asarray(total, dtype=np.float32))

    def rasmk(self, local_map: np.ndarray, boxes: np.ndarray) -> ASMKImage:
        """The R-ASMK representation of one image."""
        total = np.zeros((len(self.codebook), local_map.shape[0]), dtype=np.float32)
        any_used = np.zeros(len(self.codebook), dtype=bool)
        for per_word, used in self._region_residuals(local_map, boxes):
            total[used] += _normalise(per_word[used])
            any_used |= used
        words = np.flatnonzero(any_used)
        return ASMKImage(words, _normalise(total[words]).astype(np.float32))

    def selective(self, u: np.ndarray) -> np.ndarray:
        """sigma_alpha(u) = sign(u)|u|^alpha where u > tau, else 0."""
        return np.where(u > self.tau, np.sign(u) * np.abs(u) ** self.alpha, 0.0)

    def asmk_similarity(self, x: ASMKImage, y: ASMKImage) -> float:
        """The normalised selective match kernel K(X, Y)."""
        common, ix, iy = np.intersect1d(x.words, y.words, return_indices=True)
        if len(common) == 0:
            return 0.0
        u = np.einsum("ij,ij->i", x.vectors[ix], y.vectors[iy])
        gamma = 1.0 / np.sqrt(self.selective(np.ones(len(x.words))).sum() * self.selective(np.ones(len(y.words))).sum())
        return float(gamma * self.selective(u).sum())
