"""The FGVC6 graders as torchmetrics Metrics: sum states only, so the number under DDP equals one
process. The formulas live once, in :mod:`tasks.fgvc.protocol` (numpy), and are quoted there."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

from tasks.fgvc.protocol import macro_f1_from_counts


class TopKError(Metric):
    """Top-k error: 1 - [true label among the k highest scores], averaged over images.

    k = 1: iNaturalist 2019 and Herbarium 2019 ("average top-1 error"); k = 3: iFood 2019 and
    iMaterialist Product 2019 (e_i = min_j d(l_ij, g_i) over 3 labels)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, k: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.k = int(k)
        self.add_state("errors", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        k = min(self.k, scores.shape[-1])
        top = scores.topk(k, dim=-1).indices
        hit = (top == targets.reshape(-1, 1)).any(-1)
        self.errors += (~hit).sum().to(torch.float64)
        self.total += hit.numel()

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            raise ValueError("top-k error of zero images is undefined")
        return self.errors / self.total


class CategorizationAccuracy(Metric):
    """iCassava 2019: mean top-1 accuracy, [argmax score = true label] averaged over images."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        self.correct += (scores.argmax(-1) == targets).sum().to(torch.float64)
        self.total += targets.numel()

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            raise ValueError("accuracy of zero images is undefined")
        return self.correct / self.total


class MacroF1(Metric):
    """iWildCam 2019: F1 = 2 tp / (2 tp + fp + fn) per label, averaged over the labels that occur in
    the targets or the predictions (scikit-learn's macro average). Per-label counts are sum states."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        predicted = scores.argmax(-1) if scores.dim() == 2 else scores
        n = self.num_classes
        hit = predicted == targets
        self.tp += torch.bincount(targets[hit], minlength=n)[:n].to(torch.float64)
        self.fp += torch.bincount(predicted[~hit], minlength=n)[:n].to(torch.float64)
        self.fn += torch.bincount(targets[~hit], minlength=n)[:n].to(torch.float64)

    def compute(self) -> torch.Tensor:
        counts = [v.detach().cpu().numpy() for v in (self.tp, self.fp, self.fn)]
        return torch.tensor(macro_f1_from_counts(*counts), dtype=torch.float64)


def default_threshold_grid() -> list[float]:
    return [round(float(t), 2) for t in np.arange(0.05, 0.951, 0.05)]


class SampleF2(Metric):
    """iMet Collection 2019: F2 = 5 tp / (5 tp + 4 fn + fp) of each image's predicted label set (the
    labels scored above a threshold, or the single top label if none is), averaged over images.

    The sum of per-image F2 is kept for every threshold of ``thresholds`` (a sum state per grid
    point), so the threshold can be tuned on validation under DDP without gathering scores. With
    ``threshold`` set, ``compute`` reports F2 at that grid point (use it on test, with the threshold
    tuned on validation); with ``threshold=None`` it reports the best over the grid and remembers
    that threshold in ``selected_threshold``."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float | None = None, thresholds: Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        grid = list(thresholds) if thresholds is not None else default_threshold_grid()
        if threshold is not None and threshold not in grid:
            grid = sorted(set(grid) | {float(threshold)})
        self.register_buffer("grid", torch.tensor(grid, dtype=torch.float64), persistent=False)
        self.threshold = threshold
        self.selected_threshold: float | None = threshold
        self.add_state("f2_sum", default=torch.zeros(len(grid), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        scores = scores.detach().to(torch.float64)
        truth = targets.bool()
        top = torch.nn.functional.one_hot(scores.argmax(-1), scores.shape[-1]).bool()
        for i, t in enumerate(self.grid.to(scores.device)):
            predicted = scores > t
            predicted = torch.where(predicted.any(-1, keepdim=True), predicted, top)
            tp = (predicted & truth).sum(-1).to(torch.float64)
            fp = (predicted & ~truth).sum(-1)
            fn = (~predicted & truth).sum(-1)
            f2 = torch.where(tp > 0, 5 * tp / (5 * tp + 4 * fn + fp).clamp_min(1e-12), torch.zeros_like(tp))
            self.f2_sum[i] += f2.sum()
        self.total += len(scores)

    def compute(self) -> torch.Tensor:
        if self.total == 0:
            raise ValueError("F2 of zero images is undefined")
        mean = self.f2_sum / self.total
        if self.threshold is not None:
            index = int((self.grid.to(mean.device) - self.threshold).abs().argmin())
        else:
            index = int(mean.argmax())  # first best on ties
        self.selected_threshold = float(self.grid[index])
        return mean[index]
