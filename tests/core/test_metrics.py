"""core.metrics: overlaps worked by hand, and the per-sample base's first-copy rule on one process
(tests/test_ddp_metrics.py runs it on 2 gloo processes)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from core.metrics import PerSampleMetric, box_iou, first_copy_only, temporal_iou
from tests.ddp import DDPCase


def test_temporal_iou_hand_worked():
    # [0, 10] against: itself 1; [5, 15]: 5 / 15; touching [10, 20]: 0; [0, 20]: 10 / 20; inside [2, 4]: 2 / 10
    got = temporal_iou([[0, 10]], [[0, 10], [5, 15], [10, 20], [0, 20], [2, 4]])
    np.testing.assert_allclose(got, [[1.0, 1 / 3, 0.0, 0.5, 0.2]])
    assert got.dtype == np.float64
    assert temporal_iou([[3, 3]], [[3, 3]])[0, 0] == 0.0  # zero union: 0, not NaN


def test_temporal_iou_keeps_tensors_and_their_gradient():
    a = torch.tensor([[0.0, 10.0], [4.0, 6.0]], requires_grad=True)
    b = torch.tensor([[5.0, 15.0]])
    got = temporal_iou(a, b)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 1) and got.dtype == torch.float32
    torch.testing.assert_close(got.detach(), torch.tensor([[1 / 3], [1 / 11]]))  # 1 / (2 + 10 - 1)
    got.sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    np.testing.assert_allclose(temporal_iou(a.detach().numpy(), b.numpy()), got.detach().numpy(), rtol=1e-6)


def test_box_iou_hand_worked_and_equal_to_torchvision():
    # unit square vs. the square shifted by half: 0.5 / 1.5; vs. a far box: 0; vs. itself: 1
    got = box_iou([[0, 0, 1, 1]], [[0.5, 0, 1.5, 1], [3, 3, 4, 4], [0, 0, 1, 1]])
    np.testing.assert_allclose(got, [[1 / 3, 0.0, 1.0]])
    from torchvision.ops import box_iou as torchvision_box_iou

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(7, 2, generator=g) * 10
    a = torch.cat([xy, xy + 0.5 + torch.rand(7, 2, generator=g) * 5], 1)
    xy = torch.rand(5, 2, generator=g) * 10
    b = torch.cat([xy, xy + 0.5 + torch.rand(5, 2, generator=g) * 5], 1)
    torch.testing.assert_close(box_iou(a, b), torchvision_box_iou(a, b))
    np.testing.assert_allclose(box_iou(a.numpy(), b.numpy()), torchvision_box_iou(a, b).numpy(), rtol=1e-5)


def test_first_copy_only_keeps_each_sample_of_its_first_update_in_every_table():
    # columns: sample id, value, tag. Sample 1 came twice (tags 1 and 7): only tag 1's rows stay,
    # in both tables, even in the table where its first update had no row.
    a = np.array([[1, 10, 1], [2, 20, 1], [1, 11, 7]], dtype=float)
    b = np.array([[1, 99, 7], [2, 21, 1]], dtype=float)
    kept_a, kept_b = first_copy_only([a, b], tag_cols=[2, 2])
    np.testing.assert_array_equal(kept_a, a[:2])
    np.testing.assert_array_equal(kept_b, b[1:])


class _Rows(PerSampleMetric):
    def __init__(self):
        super().__init__()
        self.add_table("rows", width=1)

    def update(self, ids, values):
        tag = self.new_tag()
        for i, v in zip(ids, values):
            self.append_rows("rows", i, v, tag)

    def compute(self):
        (table,) = self.tables("rows")
        return torch.tensor(table[:, 1].sum())


def test_per_sample_metric_counts_a_repeated_sample_once_and_resets():
    metric = _Rows()
    metric.update([0, 1], [torch.tensor([[1.0], [2.0]]), torch.zeros(0, 1)])
    metric.update([2, 0], [torch.tensor([[4.0]]), torch.tensor([[100.0]])])  # sample 0 again: padding
    assert float(metric.compute()) == 7.0
    metric.reset()
    metric.update([5], [torch.tensor([[3.0]])])
    assert float(metric.compute()) == 3.0


def test_append_rows_refuses_rows_of_the_wrong_width():
    metric = _Rows()
    with pytest.raises(ValueError, match=r"_Rows.rows: rows of 1 values expected, got shape \(2, 3\)"):
        metric.update([0], [torch.ones(2, 3)])


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


class SampleRows(PerSampleMetric):
    """The smallest PerSampleMetric: how many samples and rows were collected, and their sum.
    Each sample's rows must count once, however the batches were sharded or padded."""

    def __init__(self) -> None:
        super().__init__()
        self.add_table("rows", width=2)

    def update(self, sample_ids: Sequence[int], rows: Sequence[torch.Tensor]) -> None:
        tag = self.new_tag()
        for sample, r in zip(sample_ids, rows):
            self.append_rows("rows", sample, r, tag)

    def compute(self) -> dict[str, torch.Tensor]:
        (table,) = self.tables("rows")
        return {
            "samples": torch.tensor(float(len(set(table[:, 0].tolist())))),
            "rows": torch.tensor(float(len(table))),
            "sum": torch.tensor(float(table[:, 1:].sum()), dtype=torch.float64),
        }


def _sample_rows_batches() -> list[tuple]:
    """Per batch: sample ids and (n, 2) rows per sample, n from 0 to 3; 11 samples in 5 batches."""
    g = torch.Generator().manual_seed(5)
    out, sample = [], 0
    for size in (3, 2, 1, 3, 2):
        ids = list(range(sample, sample + size))
        sample += size
        out.append((ids, [torch.rand(int(torch.randint(0, 4, (1,), generator=g)), 2, generator=g) for _ in ids]))
    return out


DDP_CASES = {
    "core/per_sample_base": DDPCase(SampleRows, _sample_rows_batches),
    "core/per_sample_base_padded": DDPCase(SampleRows, _sample_rows_batches, padded=True),
}
