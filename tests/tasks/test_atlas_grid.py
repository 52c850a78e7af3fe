"""Grid averaging, count threshold, class atlases and layout scores of the activation atlas, on
hand-made points whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.atlas.class_atlas import attribution_agreement, class_atlas, top_attributed_class
from tasks.atlas.grid import cell_index, grid_cells
from tasks.atlas.layout import knn_accuracy, normalize_unit_square
from tasks.atlas.render import compose_atlas

# Seven points on a 2 x 2 grid: (x, y) -> (row = y cell, col = x cell).
COORDS = np.array([[0.1, 0.1], [0.2, 0.3],              # cell (0, 0): 2 points
                   [0.9, 0.1],                           # cell (0, 1): 1 point
                   [0.6, 0.7], [0.8, 0.9], [0.7, 0.6],   # cell (1, 1): 3 points
                   [1.0, 1.0]])                          # the far edge belongs to cell (1, 1)
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


def test_normalize_unit_square():
    out = normalize_unit_square(np.array([[-2.0, 10.0], [2.0, 30.0], [0.0, 20.0]]))
    np.testing.assert_allclose(out, [[0, 0], [1, 1], [0.5, 0.5]])


def test_knn_accuracy_on_separated_and_mixed_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0.1, 0.1], [0.9, 0.1], [0.5, 0.9]])
    labels = np.repeat(np.arange(3), 30)
    coords = centres[labels] + rng.normal(0, 0.02, (90, 2))
    assert knn_accuracy(coords, labels, k=5) == 1.0
    # one point of class 0 sits inside class 1's cluster: only it is misclassified
    coords[0] = centres[1]
    assert knn_accuracy(coords, labels, k=5) == pytest.approx(89 / 90)


def test_class_atlas_keeps_top_attributed_rows_sorted_by_attribution():
    # attribution columns: (class, value) pairs for the top-2 logits of each activation
    attr_classes = np.array([[0, 1], [0, 1], [1, 0], [1, 0], [0, 2], [2, 0], [1, 0]])
    attr_values = np.array([[2.0, 1.0], [1.0, 0.5], [3.0, 0.0], [1.0, 0.2], [4.0, 1.0], [1.0, 0.1], [-1.0, -2.0]])
    assert top_attributed_class(attr_classes, attr_values).tolist() == [0, 0, 1, 1, 0, 2, -1]
    atlas = class_atlas(COORDS, ACTS, LABELS, attr_classes, attr_values, class_index=0, grid_size=2)
    # class 0 tops rows 0, 1 (cell (0, 0), mean attribution 1.5) and row 4 (cell (1, 1), 4.0)
    assert atlas.grid.cells.tolist() == [[1, 1], [0, 0]]
    np.testing.assert_allclose(atlas.attribution, [4.0, 1.5])
    np.testing.assert_allclose(atlas.grid.means, [[2, 2], [2, 1]])
    assert atlas.grid.cell_of_sample.tolist() == [1, 1, -1, -1, 0, -1, -1]


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
    assert (image[0:4, 8:12] == 0).all()        # row 0, col 2: the first icon, opaque
    assert (image[8:12, 4:8] == 178).all()      # row 2, col 1: 0.5 * 100 + 0.5 * 255 = 177.5 -> 178
    assert (image[0:4, 0:4] == 255).all()       # an empty cell stays white


def test_class_atlas_of_a_class_no_activation_favours_is_empty():
    attr_classes = np.zeros((7, 1), np.int64)
    attr_values = np.ones((7, 1))
    atlas = class_atlas(COORDS, ACTS, LABELS, attr_classes, attr_values, class_index=2, grid_size=2)
    assert len(atlas.grid.cells) == 0 and len(atlas.attribution) == 0
    assert (atlas.grid.cell_of_sample == -1).all()
