"""Interpolated average precision from a ranked list of matches, shared by detection and retrieval.

The protocol-specific part (which prediction matches which ground truth) lives with each task; this
module only turns "is the k-th ranked prediction a true positive?" into a number."""

from __future__ import annotations

import numpy as np


def interpolated_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """Area under the precision envelope, as the ActivityNet / VOC-2010+ evaluators define it.

    Precision is made monotonically non-increasing from the right (the interpolated precision at
    recall r is the best precision at any recall >= r), then summed over the recall steps."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.shape != recall.shape:
        raise ValueError(f"precision {precision.shape} and recall {recall.shape} differ in shape")
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def average_precision_from_matches(is_true_positive: np.ndarray, num_positives: int) -> float:
    """AP of predictions already sorted by descending score; ``is_true_positive[k]`` says whether
    the k-th one matched a not-yet-matched ground truth. ``num_positives`` counts all ground truths,
    so ground truths no prediction found lower the recall (and the AP).

    Raises ValueError when there is no ground truth: AP is undefined there, and a silent NaN or 0
    would bias a mean over classes."""
    if num_positives <= 0:
        raise ValueError("average precision is undefined without ground-truth positives")
    tp = np.asarray(is_true_positive, dtype=np.float64).reshape(-1)
    if tp.size == 0:
        return 0.0
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(1.0 - tp)
    recall = tp_cum / float(num_positives)
    precision = tp_cum / (tp_cum + fp_cum)
    return interpolated_average_precision(precision, recall)
