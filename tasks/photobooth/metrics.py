"""Precision and recall of captured moments against the labelled moments worth capturing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.metrics import PerSampleMetric


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


def best_frame_offsets(shots: Sequence[int], moments: Sequence[tuple[int, int, int]]) -> list[int]:
    """Per captured moment (matched as :func:`match_shots` does), the distance in frames from the shot
    that captured it to its labelled best frame: 0 when the shutter took the best frame."""
    offsets: dict[int, int] = {}
    for shot in sorted(shots):
        for m, (start, end, best) in enumerate(moments):
            if m not in offsets and start <= shot <= end:
                offsets[m] = abs(shot - best)
                break
    return [offsets[m] for m in sorted(offsets)]


class CapturedMomentsPR(PerSampleMetric):
    """The Photobooth protocol of this project (no public code to reproduce): over all clips,
    precision = captured moments / shots taken, recall = captured moments / labelled moments, where
    a shot captures the first not yet captured labelled moment whose frames [start, end] hold it.
    Per clip (its id unique over the data set) one row of counts, gathered over ranks and taken
    once, so a clip repeated by DistributedSampler's padding counts once. No labelled moment raises."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_table("clips", width=3)  # captured, shots, moments

    def update(
        self,
        clip_ids: Sequence[int],
        shots: Sequence[Sequence[int]],
        moments: Sequence[Sequence[tuple[int, int, int]]],
    ) -> None:
        """Per clip: its id, the frame indices of its shots and its labelled moments (start, end, best)."""
        tag = self.new_tag()
        for clip, clip_shots, clip_moments in zip(clip_ids, shots, moments, strict=True):
            row = [match_shots(clip_shots, clip_moments), len(clip_shots), len(clip_moments)]
            self.append_rows("clips", int(clip), row, tag)

    def compute(self) -> dict[str, torch.Tensor]:
        (rows,) = self.tables("clips")
        captured, shots, moments = (float(v) for v in rows[:, 1:].sum(0)) if len(rows) else (0.0, 0.0, 0.0)
        if moments == 0:
            raise ValueError("CapturedMomentsPR: no labelled moments to capture")
        precision = captured / shots if shots else 0.0
        recall = captured / moments
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        return {
            k: torch.tensor(v, dtype=torch.float32)
            for k, v in (("precision", precision), ("recall", recall), ("f1", f1))
        }
