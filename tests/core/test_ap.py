"""Interpolated AP on hand-worked ranked lists."""

import numpy as np
import pytest

from core.ap import average_precision_from_matches, interpolated_average_precision


def test_envelope_and_recall_steps():
    # ranks: TP, FP, TP with 2 positives -> P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1.
    # Envelope at R=1/2 is 1 (best precision at recall >= 1/2), at R=1 it is 2/3.
    assert average_precision_from_matches([1, 0, 1], 2) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)


def test_false_positive_first_halves_the_precision():
    assert average_precision_from_matches([0, 1], 1) == pytest.approx(0.5)


def test_missed_ground_truth_caps_recall():
    assert average_precision_from_matches([1], 2) == pytest.approx(0.5)
    assert average_precision_from_matches([1, 1], 2) == pytest.approx(1.0)


def test_no_predictions_scores_zero_and_no_positives_raises():
    assert average_precision_from_matches([], 3) == 0.0
    with pytest.raises(ValueError, match="without ground-truth"):
        average_precision_from_matches([1, 0], 0)


def test_interpolation_uses_later_higher_precision():
    # precision dips then recovers: the dip is interpolated away.
    precision = np.array([1.0, 0.5, 0.75])
    recall = np.array([0.25, 0.25, 0.75])
    # steps: 0->0.25 at envelope 1, 0.25->0.75 at 0.75; recall never reaches 1.
    assert interpolated_average_precision(precision, recall) == pytest.approx(0.25 + 0.5 * 0.75)
    with pytest.raises(ValueError, match="shape"):
        interpolated_average_precision(precision, recall[:2])
