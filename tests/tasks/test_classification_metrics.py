"""The image classifiers' validation metrics (torchmetrics' accuracy collection) under DDP: the case
run on 2 gloo processes by tests/test_ddp_metrics.py."""

from __future__ import annotations

import torch

from tasks.classification.module import ImageClassificationTask
from tests.ddp import DDPCase


def _ddp_metrics():
    return ImageClassificationTask(backbone="test_efficientnet", num_classes=10, image_size=32).val_metrics


def _ddp_batches() -> list[tuple]:
    g = torch.Generator().manual_seed(0)
    out = []
    for n in (7, 5, 9, 3, 6):  # 5 batches: rank 0 gets 3 (22 samples), rank 1 gets 2 (8 samples)
        out.append((torch.randn(n, 10, generator=g), torch.randint(0, 10, (n,), generator=g)))
    return out


DDP_CASES = {"classification/accuracy": DDPCase(_ddp_metrics, _ddp_batches)}
