"""The FGVC graders as torchmetrics under DDP: the cases run on 2 gloo processes by
tests/test_ddp_metrics.py (their hand-worked cases are in tests/tasks/test_fgvc.py)."""

from __future__ import annotations

import torch

from tasks.fgvc.metrics import CategorizationAccuracy, MacroF1, SampleF2, TopKError
from tests.ddp import DDPCase


def _ddp_scores_batches() -> list[tuple]:
    """(scores (n, 12), labels (n,)) of different sizes, for the FGVC6 single-label graders."""
    g = torch.Generator().manual_seed(3)
    out = []
    for n in (7, 5, 9, 3, 6):
        labels = torch.randint(0, 12, (n,), generator=g)
        scores = torch.randn(n, 12, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, 12)
        out.append((scores, labels))
    return out


def _ddp_multilabel_batches() -> list[tuple]:
    """(probabilities (n, 9), multi-hot targets (n, 9)) for iMet's sample-averaged F2."""
    g = torch.Generator().manual_seed(4)
    out = []
    for n in (6, 4, 8, 3, 5):
        targets = (torch.rand(n, 9, generator=g) < 0.3).float()
        targets[:, 0] = 1.0
        probs = (0.5 * targets + 0.6 * torch.rand(n, 9, generator=g)).clamp(0, 1)
        out.append((probs, targets))
    return out


DDP_CASES = {
    f"fgvc/{name}": DDPCase(make, batches, covers=(cls,))
    for name, make, batches, cls in (
        ("top1", lambda: TopKError(1), _ddp_scores_batches, TopKError),
        ("top3", lambda: TopKError(3), _ddp_scores_batches, TopKError),
        ("accuracy", CategorizationAccuracy, _ddp_scores_batches, CategorizationAccuracy),
        ("macro_f1", lambda: MacroF1(12), _ddp_scores_batches, MacroF1),
        ("f2_tuned", SampleF2, _ddp_multilabel_batches, SampleF2),
        ("f2_fixed", lambda: SampleF2(threshold=0.4), _ddp_multilabel_batches, SampleF2),
    )
}
