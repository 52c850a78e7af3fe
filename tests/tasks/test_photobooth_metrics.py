"""Photobooth's captured-moments precision / recall under DDP: the cases run on 2 gloo processes by
tests/test_ddp_metrics.py (its hand-worked cases are in tests/tasks/test_photobooth.py)."""

from __future__ import annotations

import torch

from tasks.photobooth.metrics import CapturedMomentsPR
from tests.ddp import DDPCase


def _ddp_batches() -> list[tuple]:
    """Per clip the shutter's shots and the labelled moments (start, end, best)."""
    g = torch.Generator().manual_seed(30)
    out, clip = [], 0
    for clips in (2, 1, 3, 2, 1):
        ids, shots, moments = list(range(clip, clip + clips)), [], []
        clip += clips
        for _ in range(clips):
            starts = sorted(torch.randperm(40, generator=g)[: int(torch.randint(0, 3, (1,), generator=g))].tolist())
            moments.append([(s * 2, s * 2 + 5, s * 2 + 2) for s in starts])
            stray = torch.randint(0, 90, (int(torch.randint(0, 3, (1,), generator=g)),), generator=g).tolist()
            hits = [m[0] + int(torch.randint(0, 6, (1,), generator=g)) for m in moments[-1]]
            hits = [h for h in hits if torch.rand(1, generator=g) < 0.7]
            shots.append(sorted(stray + hits))
        out.append((ids, shots, moments))
    return out


DDP_CASES = {
    f"photobooth/captured_moments{'_padded' if padded else ''}": DDPCase(
        CapturedMomentsPR, _ddp_batches, padded=padded, covers=(CapturedMomentsPR,)
    )
    for padded in (False, True)
}
