"""The Google Landmarks 2019 metrics as torchmetrics Metrics: recognition GAP and retrieval mAP@100.

Both reproduce tensorflow/models research/delf/delf/python/datasets/google_landmarks_dataset/
metrics.py (``GlobalAveragePrecision`` with ``ignore_non_gt_test_images=False``, and
``MeanAveragePrecision`` with ``max_predictions=100``) by calling the same numpy-free routines as the
scoring CLI (tasks.landmarks.evaluate, on tasks.landmarks.protocol) on every rank once all queries are gathered
(core.metrics.PerSampleMetric: a query repeated by DistributedSampler padding counts once).

Sample ids are the queries' positions in the order of their string ids (as the DataModule numbers
test.csv sorted), so GAP's tie-break "by query id" is the same."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.metrics import PerSampleMetric
from tasks.landmarks.protocol import MAX_PREDICTIONS, average_precision_at_k, global_average_precision

# A landmark id that no prediction carries: the truth of a landmark query whose prediction is wrong.
_NEVER = -(2**40)


class GlobalAveragePrecision(PerSampleMetric):
    """GAP (micro-AP) of one (landmark, score) prediction per query, the Kaggle recognition metric:
    ``GAP = 1/N sum_i P(i) rel(i)`` over predictions sorted by score, N = queries with a landmark.

    ``update(sample_ids, landmarks, scores, truths, predicted=None)``: ``truths[i]`` the landmark
    ids of query i (empty: non-landmark query); ``predicted[i]`` False for a query without a
    prediction (it still counts in N when it has a landmark)."""

    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # predicted, landmark, score, correct, has a landmark
        self.add_table("queries", width=5)

    def update(
        self,
        sample_ids: Sequence[int] | torch.Tensor,
        landmarks: Sequence[int] | torch.Tensor,
        scores: Sequence[float] | torch.Tensor,
        truths: Sequence[Sequence[int]],
        predicted: Sequence[bool] | torch.Tensor | None = None,
    ) -> None:
        tag = self.new_tag()
        ids = torch.as_tensor(sample_ids).tolist()
        landmarks = torch.as_tensor(landmarks).tolist()
        scores = torch.as_tensor(scores, dtype=torch.float64).tolist()
        predicted = [True] * len(ids) if predicted is None else torch.as_tensor(predicted).tolist()
        for i, lm, s, truth, p in zip(ids, landmarks, scores, truths, predicted):
            truth = [int(t) for t in truth]
            row = [float(bool(p)), float(lm), s, float(bool(p) and int(lm) in truth), float(bool(truth))]
            self.append_rows("queries", i, [row], tag)

    def compute(self) -> torch.Tensor:
        (rows,) = self.tables("queries")
        predictions, solution = {}, {}
        for sample, p, lm, s, correct, positive in rows:
            key = int(sample)
            if p:
                predictions[key] = (int(lm), float(s))
            solution[key] = [int(lm)] if correct else [_NEVER] if positive else []
        return torch.tensor(global_average_precision(predictions, solution), dtype=torch.float64)


class MeanAveragePrecisionAtK(PerSampleMetric):
    """mAP@k (k=100: the Kaggle retrieval metric) over every query given to ``update``:
    ``1/Q sum_q 1/min(m_q, k) sum_{j<=k} P_q(j) rel_q(j)``, a repeated id counted at its first
    position only; a query with an empty ranking scores 0.

    ``update(sample_ids, rankings, relevant)``: ``rankings[i]`` index ids best first, ``relevant[i]``
    the ids relevant to query i (any hashable ids: index positions or strings)."""

    higher_is_better = True

    def __init__(self, k: int = MAX_PREDICTIONS, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = int(k)
        self.add_table("ap", width=1)

    def update(
        self, sample_ids: Sequence[int] | torch.Tensor, rankings: Sequence[Sequence], relevant: Sequence[Sequence]
    ) -> None:
        tag = self.new_tag()
        for i, ranking, truth in zip(torch.as_tensor(sample_ids).tolist(), rankings, relevant):
            ranking = ranking.tolist() if isinstance(ranking, torch.Tensor) else list(ranking)
            truth = truth.tolist() if isinstance(truth, torch.Tensor) else list(truth)
            self.append_rows("ap", i, [[average_precision_at_k(ranking, truth, self.k)]], tag)

    def compute(self) -> torch.Tensor:
        (rows,) = self.tables("ap")
        if len(rows) == 0:
            raise ValueError("mAP@k is undefined: no query was given")
        return torch.tensor(float(rows[:, 1].mean()), dtype=torch.float64)
