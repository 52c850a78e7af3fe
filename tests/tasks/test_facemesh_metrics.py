"""Inter-ocular NME and detector AP at IoU 0.5, worked by hand from their definitions."""

from __future__ import annotations

import pytest
import torch

from tasks.facemesh.metrics import DetectorAP50, InterOcularNME, interocular_nme
from tests.ddp import DDPCase


def _face(n: int = 6) -> torch.Tensor:
    target = torch.zeros(n, 3)
    target[:, 0] = torch.arange(n, dtype=torch.float32)
    target[0, :2] = torch.tensor([0.0, 0.0])
    target[1, :2] = torch.tensor([10.0, 0.0])  # eye corners 0 and 1: inter-ocular distance 10
    return target


def test_nme_by_hand():
    target = _face()
    pred = target.clone()
    pred[:, 0] += 3.0
    pred[:, 1] += 4.0  # every point 5 px off
    pred[:, 2] += 100.0  # z is not part of the 2D measure
    metric = InterOcularNME((0, 1))
    metric.update(pred[None], target[None])
    assert metric.compute().item() == pytest.approx(0.5)
    # A second face, only points 2 and 3 annotated, 0 and 2 px off: (0 + 2) / 2 / 10 = 0.1
    pred2 = target.clone()
    pred2[3, 0] += 2.0
    pred2[4, 0] += 50.0  # not annotated
    mask = torch.tensor([False, False, True, True, False, False])
    metric.update(pred2[None], target[None], mask[None])
    assert metric.compute().item() == pytest.approx((0.5 + 0.1) / 2)
    nme, valid = interocular_nme(pred2[None], target[None], (0, 1), torch.zeros(1, 6, dtype=torch.bool))
    assert valid.tolist() == [False]


def test_nme_without_faces_raises():
    with pytest.raises(ValueError, match="no face"):
        InterOcularNME((0, 1)).compute()


def test_ap50_by_hand_coco_interpolation():
    """One face. A true positive ranked first: AP 1. A false positive ranked first: precision 1/2 at
    the only recall level; COCO's 101-point interpolation gives 0.5."""
    target = [{"boxes": torch.tensor([[10.0, 10, 50, 50]])}]
    hit, miss = [12.0, 10, 50, 52], [80.0, 80, 120, 120]  # hit: IoU 0.905
    for scores, expected in (([0.9, 0.8], 1.0), ([0.7, 0.8], 0.5)):
        metric = DetectorAP50()
        metric.update([0], [{"boxes": torch.tensor([hit, miss]), "scores": torch.tensor(scores)}], target)
        assert metric.compute().item() == pytest.approx(expected)
    # IoU below 0.5 is a miss
    metric = DetectorAP50()
    metric.update([0], [{"boxes": torch.tensor([[30.0, 30, 70, 70]]), "scores": torch.tensor([0.9])}], target)
    assert metric.compute().item() == pytest.approx(0.0)
    # A second image whose face nobody found halves the recall: precision 1 up to recall 0.5 -> AP
    # = 51 / 101 of the 101 recall points (0, 0.01, ..., 0.5).
    metric = DetectorAP50()
    metric.update(
        [0, 1],
        [
            {"boxes": torch.tensor([hit]), "scores": torch.tensor([0.9])},
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)},
        ],
        [target[0], {"boxes": torch.tensor([[0.0, 0, 30, 30]])}],
    )
    assert metric.compute().item() == pytest.approx(51 / 101)
    # a sample sent twice (DistributedSampler padding) counts once
    metric.update(
        [1], [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0)}], [{"boxes": torch.tensor([[0.0, 0, 30, 30]])}]
    )
    assert metric.compute().item() == pytest.approx(51 / 101)
    with pytest.raises(ValueError, match="no image with a ground-truth face"):
        DetectorAP50().compute()


# --- DDP cases (run on 2 gloo processes by tests/test_ddp_metrics.py) --------------------------------


def _ddp_nme_batches() -> list[tuple]:
    """(pred points, true points, annotated-point mask) of 2-4 faces of 12 points per batch."""
    g = torch.Generator().manual_seed(5)
    out = []
    for n in (3, 2, 4, 1, 2):
        target = torch.rand(n, 12, 3, generator=g) * 100
        pred = target + torch.randn(n, 12, 3, generator=g) * 3
        mask = torch.rand(n, 12, generator=g) < 0.7
        mask[:, 0] = True
        out.append((pred, target, mask))
    return out


def _ddp_box_batches() -> list[tuple]:
    """Image ids, detector outputs and ground truths (torchmetrics' dicts) of 1-3 images per batch."""
    g = torch.Generator().manual_seed(6)
    out, image = [], 0
    for n in (2, 3, 1, 2, 2):
        ids, preds, targets = list(range(image, image + n)), [], []
        image += n
        for _ in range(n):
            m = int(torch.randint(0, 3, (1,), generator=g))
            xy = torch.rand(m, 2, generator=g) * 80
            gt = torch.cat([xy, xy + 20 + torch.rand(m, 2, generator=g) * 20], 1)
            k = int(torch.randint(0, 4, (1,), generator=g))
            near = gt[torch.randint(0, max(m, 1), (k,), generator=g)] if m else torch.zeros(k, 4)
            boxes = near + torch.randn(k, 4, generator=g) * 6
            boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)
            preds.append({"boxes": boxes, "scores": torch.rand(k, generator=g)})
            targets.append({"boxes": gt})
        out.append((ids, preds, targets))
    return out


DDP_CASES = {
    "facemesh/nme": DDPCase(lambda: InterOcularNME(eye_corners=(0, 5)), _ddp_nme_batches, covers=(InterOcularNME,)),
    "facemesh/ap50": DDPCase(DetectorAP50, _ddp_box_batches, covers=(DetectorAP50,)),
    "facemesh/ap50_padded": DDPCase(DetectorAP50, _ddp_box_batches, padded=True, covers=(DetectorAP50,)),
}
