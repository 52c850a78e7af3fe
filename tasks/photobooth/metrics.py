"""Precision and recall of captured moments against the labelled moments worth capturing."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


def match_shots(shots: Sequence[int], moments: Sequence[tuple[int, int, int]]) -> int:
    """The number of captured moments: a shot inside a moment's [start, end] (inclusive) frames
    captures it; each moment is captured once, so a second shot of it is a false positive."""
    taken: set[int] = set()
    for shot in sorted(shots):
        for m, (start, end, _best) in enumerate(moments):
            if m not in taken and start <= shot <= end:
                taken.add(m)
                break
    return len(taken)


class CapturedMomentsPR(Metric):
    """The Photobooth protocol of this project (no public code to reproduce): over all clips,
    precision = captured moments / shots taken, recall = captured moments / labelled moments, where
    a shot captures the first not yet captured labelled moment whose frames [start, end] hold it.
    Counts are sums, so the value under DDP equals one process. No labelled moment raises."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("captured", "shots", "moments"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, shots: Sequence[Sequence[int]], moments: Sequence[Sequence[tuple[int, int, int]]]) -> None:
        """Per clip: the frame indices of its shots and its labelled moments (start, end, best)."""
        for clip_shots, clip_moments in zip(shots, moments, strict=True):
            captured = match_shots(clip_shots, clip_moments)
            self.captured += captured
            self.shots += len(clip_shots)
            self.moments += len(clip_moments)

    def compute(self) -> dict[str, torch.Tensor]:
        if int(self.moments) == 0:
            raise ValueError("CapturedMomentsPR: no labelled moments to capture")
        precision = self.captured.float() / self.shots.float() if int(self.shots) else torch.tensor(0.0)
        recall = self.captured.float() / self.moments.float()
        f1 = 2 * precision * recall / (precision + recall) if float(precision + recall) > 0 else torch.tensor(0.0)
        return {"precision": precision, "recall": recall, "f1": f1}
