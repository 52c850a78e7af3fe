"""The Google Landmarks 2019 competitions' scoring, in the standard library only (the CSV scorer
imports no torch): the two metrics and the score of a submission file.

Protocol (tensorflow/models, research/delf/delf/python/datasets/google_landmarks_dataset:
``metrics.py`` and ``dataset_file_io.py``; checked beside it on the same files, see docs/landmarks.md):

- Files: see datamodules/gldv2_files.py (solution and submission readers).
- GAP (recognition): with the M predictions sorted by score (descending; ties by query id, then by
  class, ascending) and N the number of queries that have at least one ground-truth landmark,
  ``GAP = 1/N * sum_i P(i) rel(i)``: P(i) the precision of the first i predictions, rel(i) = 1 if
  prediction i is one of its query's landmarks. A prediction on a non-landmark query is a wrong
  prediction that lowers the precision of all after it; a query without prediction only counts in N.
- mAP@100 (retrieval): ``mAP = 1/Q * sum_q 1/min(m_q, 100) * sum_{k<=min(n_q,100)} P_q(k) rel_q(k)``
  over all Q queries of the solution (one without prediction scores 0); a repeated id in a
  prediction list keeps its position but counts only at its first occurrence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from datamodules.gldv2_files import RECOGNITION, USAGES, read_solution, read_submission

MAX_PREDICTIONS = 100


def global_average_precision(
    predictions: Mapping[str, tuple[int, float]], solution: Mapping[str, Sequence[int]]
) -> float:
    """GAP (micro-AP) of one prediction ``(landmark_id, score)`` per query against ``solution``
    ({query: landmark ids}; empty = non-landmark). Raises when no query has a landmark."""
    positives = sum(1 for truth in solution.values() if truth)
    if positives == 0:
        raise ValueError("GAP is undefined: no query of the solution has a landmark")
    unknown = [q for q in predictions if q not in solution]
    if unknown:
        raise ValueError(f"{len(unknown)} predicted queries are not in the solution, e.g. {unknown[0]!r}")
    not_finite = [q for q, (_, s) in predictions.items() if not math.isfinite(s)]
    if not_finite:
        raise ValueError(f"{len(not_finite)} prediction scores are not finite, e.g. query {not_finite[0]!r}")
    # Score descending, then query id and class ascending (the Kaggle convention).
    ranked = sorted(predictions.items(), key=lambda kv: (-kv[1][1], kv[0], kv[1][0]))
    total = 0.0
    correct = 0
    for i, (query, (landmark, _)) in enumerate(ranked, start=1):
        if landmark in solution[query]:
            correct += 1
            total += correct / i
    return total / positives


def average_precision_at_k(prediction: Sequence[str], relevant: Sequence[str], k: int = MAX_PREDICTIONS) -> float:
    """AP@k of one ranked list: precision at each first occurrence of a relevant id within the first
    k positions, summed and divided by min(number relevant, k)."""
    relevant_set = set(relevant)
    seen: set[str] = set()
    hits = 0
    total = 0.0
    for position, image in enumerate(prediction[:k], start=1):
        if image in seen:
            continue
        seen.add(image)
        if image in relevant_set:
            hits += 1
            total += hits / position
    return total / min(len(relevant), k) if relevant else 0.0


def mean_average_precision_at_k(
    predictions: Mapping[str, Sequence[str]], solution: Mapping[str, Sequence[str]], k: int = MAX_PREDICTIONS
) -> float:
    """mAP@k over every query of ``solution`` (a query without prediction scores 0)."""
    if not solution:
        raise ValueError("mAP is undefined: the solution has no query")
    unknown = [q for q in predictions if q not in solution]
    if unknown:
        raise ValueError(f"{len(unknown)} predicted queries are not in the solution, e.g. {unknown[0]!r}")
    return sum(average_precision_at_k(p, solution[q], k) for q, p in predictions.items()) / len(solution)


def score(submission: str | Path, solution_file: str | Path, track: str) -> dict[str, float]:
    """``{"public": ..., "private": ...}`` of a submission file (NaN for an empty subset)."""
    solution, ignored = read_solution(solution_file, track)
    predictions = read_submission(submission, track, solution, ignored)
    metric = global_average_precision if track == RECOGNITION else mean_average_precision_at_k
    out = {}
    for usage in USAGES:
        if not solution[usage]:
            out[usage.lower()] = math.nan
            continue
        out[usage.lower()] = metric(predictions[usage], solution[usage])
    return out
