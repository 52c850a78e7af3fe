"""Grid averaging, count threshold, class atlases and layout scores of the activation atlas, on
hand-made points whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.atlas.class_atlas import (
    attribution_agreement,
    class_atlas,
    class_sample_indices,
    top_indices,
    winning_indices,
)
from tasks.atlas.grid import cell_index, grid_cells
from tasks.atlas.layout import knn_accuracy, normalize_layout, whitening_matrix
from tasks.atlas.render import compose_atlas

# Seven points on a 2 x 2 grid: (x, y) -> (row = y cell, col = x cell).
COORDS = np.array(
    [
        [0.1, 0.1],
        [0.2, 0.3],  # cell (0, 0): 2 points
        [0.9, 0.1],  # cell (0, 1): 1 point
        [0.6, 0.7],
        [0.8, 0.9],
        [0.7, 0.6],  # cell (1, 1): 3 points
        [1.0, 1.0],
    ]
)  # the far edge belongs to cell (1, 1)
ACTS = np.array([[1, 0], [3, 2], [5, 5], [0, 4], [2, 2], [4, 0], [4, 4]], np.float32)
LABELS = np.array([0, 0, 1, 1, 1, 2, 1])


def test_cell_index_puts_edges_in_the_last_cell():
    row, col = cell_index(COORDS, 2)
    assert row.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert col.tolist() == [0, 0, 1, 1, 1, 1, 1]


def test_grid_means_counts_and_min_count_drop():
    grid = grid_cells(COORDS, ACTS, grid_size=2, min_count=2, labels=LABELS, num_classes=3, chunk_size=3)
    assert grid.cells.tolist() == [[0, 0], [1, 1]]  # (0, 1) holds one point: dropped
    assert grid.counts.tolist() == [2, 4]
    np.testing.assert_allclose(grid.means, [[2.0, 1.0], [2.5, 2.5]])  # (1+3)/2, (0+2)/2; (0+2+4+4)/4, (4+2+0+4)/4
    assert grid.cell_of_sample.tolist() == [0, 0, -1, 1, 1, 1, 1]
    assert grid.class_counts.tolist() == [[2, 0, 0], [0, 3, 1]]
    assert grid.top_classes(2) == [[(0, 2)], [(1, 3), (2, 1)]]


def test_grid_keeps_every_cell_at_min_count_one_and_weights_restrict_rows():
    grid = grid_cells(COORDS, ACTS, grid_size=2, min_count=1)
    assert grid.cells.tolist() == [[0, 0], [0, 1], [1, 1]]
    np.testing.assert_allclose(grid.means[1], [5, 5])
    weights = np.array([1, 0, 1, 0, 0, 1, 1], np.float64)
    grid = grid_cells(COORDS, ACTS, grid_size=2, min_count=1, weights=weights)
    assert grid.counts.tolist() == [1, 1, 2]
    np.testing.assert_allclose(grid.means, [[1, 0], [5, 5], [4, 2]])


def test_grid_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="7 coordinates but 6 activations"):
        grid_cells(COORDS, ACTS[:6], 2)


def test_normalize_layout_clips_to_the_percentiles_with_the_notebook_margin():
    # x = 0..100 (101 points): 1st / 99th percentiles 1 and 99; mins -= 0.1 * 98 -> -8.8; then
    # maxs += 0.1 * (99 - (-8.8)) -> 109.78: nothing is clipped, x / 100 after the shift by 0.
    x = np.arange(101, dtype=np.float64)
    # y: 100 points at 0..99 and one outlier at 10000: percentiles 0.99 / 99.01 (numpy's linear
    # interpolation), range widened to [-8.812, 109.822]; the outlier is clipped to 109.822.
    y = np.concatenate([np.arange(100, dtype=np.float64), [10000.0]])
    out = normalize_layout(np.stack([x, y], 1))
    np.testing.assert_allclose(out[:, 0], x / 100, atol=1e-6)
    lo, hi = np.percentile(y, 1), np.percentile(y, 99)
    lo_m = lo - 0.1 * (hi - lo)
    hi_m = hi + 0.1 * (hi - lo_m)
    assert out[-1, 1] == pytest.approx(1.0)
    assert out[50, 1] == pytest.approx((50 - 0) / (hi_m - 0), rel=1e-5)  # min of the clipped y is 0
    assert lo_m < 0 and 109 < hi_m < 110


def test_whitening_is_the_inverse_second_moment_matrix():
    # A^T A / N by hand for four rows: [[ (4+0+1+1)/4, (0+0+1-1)/4 ], [., (0+4+1+1)/4 ]] = 1.5 I
    acts = np.array([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, -1.0]], np.float32)
    np.testing.assert_allclose(whitening_matrix(acts, chunk_size=3), np.eye(2) / 1.5, rtol=1e-6)
    skewed = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]], np.float32)  # A^T A / 3 = [[2, 1], [1, 1]] / 3
    np.testing.assert_allclose(whitening_matrix(skewed), 3 * np.array([[1.0, -1.0], [-1.0, 2.0]]), rtol=1e-5)


def test_knn_accuracy_on_separated_and_mixed_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]])
    labels = np.repeat(np.arange(3), 30)
    coords = centres[labels] + rng.normal(0, 0.02, (90, 2))
    assert knn_accuracy(coords, labels, k=5) == 1.0
    # one point of class 0 sits inside class 1's cluster: only it is misclassified
    coords[0] = centres[1]
    assert knn_accuracy(coords, labels, k=5) == pytest.approx(89 / 90)


# attributions (7 samples x 3 classes): winners of class 0 are rows 0, 1, 4
ATTRIBUTIONS = np.array(
    [
        [2.0, 1.0, 0.0],
        [1.0, 0.5, 0.0],
        [0.0, 3.0, 0.0],
        [0.2, 1.0, 0.0],
        [4.0, 1.0, 0.0],
        [0.1, 0.0, 1.0],
        [-1.0, -2.0, -3.0],
    ]
)


def test_class_samples_are_top_positive_attributions_then_winners_with_duplicates():
    assert winning_indices(ATTRIBUTIONS, 0).tolist() == [0, 1, 4, 6]  # row 6: all negative, argmax is class 0
    assert top_indices(ATTRIBUTIONS, 0, n=3).tolist() == [4, 0, 1]
    assert top_indices(ATTRIBUTIONS, 0, n=10).tolist() == [4, 0, 1, 3, 5]  # the 0.0 and -1.0 rows are dropped
    assert class_sample_indices(ATTRIBUTIONS, 2, top_n=3).tolist() == [5, 5]  # top positive + winner


@pytest.mark.slow  # UMAP's numba compilation
def test_class_atlas_lays_out_its_own_samples_on_its_own_grid():
    rng = np.random.default_rng(0)
    acts = np.concatenate([rng.normal(0, 1, (20, 4)) + [5, 0, 0, 0], rng.normal(0, 1, (20, 4)) + [0, 5, 0, 0]])
    labels = np.repeat([0, 1], 20)
    attributions = np.stack([acts[:, 0], acts[:, 1]], 1)  # class c is attributed by channel c
    atlas = class_atlas(
        acts, attributions, labels, 0, top_n=5, grid_size=2, min_count=1, umap={"n_neighbors": 5}, num_classes=2
    )
    expected = class_sample_indices(attributions, 0, top_n=5)
    assert atlas.indices.tolist() == expected.tolist() and len(expected) == 25  # 5 top + 20 winners
    assert atlas.coords.shape == (25, 2) and atlas.grid.grid_size == 2
    assert atlas.grid.counts.sum() == 25
    result = atlas.enrichment(labels)
    assert result["purity"] == 1.0 and result["base_rate"] == 0.5 and result["enrichment"] == 2.0


def test_attribution_agreement_counts_the_class_in_the_top_cells():
    grid = grid_cells(COORDS, ACTS, grid_size=2, min_count=1, labels=LABELS, num_classes=3)
    attribution = np.array([0.0, 0.0, 5.0, 1.0, 1.0, 1.0, 1.0])  # to class 1: cell (0, 1) highest
    result = attribution_agreement(grid, LABELS, attribution, class_index=1, top_cells=1)
    assert result["cells"] == [1]
    assert result["purity"] == 1.0 and result["chance"] == pytest.approx(4 / 7)
    assert result["recall"] == pytest.approx(1 / 4) and result["coverage"] == pytest.approx(1 / 7)


def test_compose_atlas_places_icons_and_fades_with_alpha():
    icons = np.stack([np.full((4, 4, 3), 0, np.uint8), np.full((4, 4, 3), 100, np.uint8)])
    image = np.asarray(compose_atlas(3, np.array([[0, 2], [2, 1]]), icons, alpha=np.array([1.0, 0.5])))
    assert image.shape == (12, 12, 3)
    assert (image[0:4, 8:12] == 0).all()  # row 0, col 2: the first icon, opaque
    assert (image[8:12, 4:8] == 178).all()  # row 2, col 1: 0.5 * 100 + 0.5 * 255 = 177.5 -> 178
    assert (image[0:4, 0:4] == 255).all()  # an empty cell stays white


def test_class_atlas_of_a_class_nothing_attributes_to_is_refused():
    with pytest.raises(ValueError, match="class 2: only 0 samples"):
        class_atlas(ACTS, np.ones((7, 3)) * [1, 0, -1], LABELS, 2, grid_size=2)
