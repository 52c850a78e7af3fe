"""What every official metric shares: overlap measures (temporal IoU, box IoU; NumPy in
:mod:`core.overlap`, tensors here) and a base class for
metrics that collect per-sample results and compute the protocol once, on every rank, over all of them.

Why a base class: ranked metrics (detection mAP, average recall, retrieval AP) cannot be summed per
batch; they need every prediction of the data set at once. Under DDP, torchmetrics gathers list
states by concatenation, but a ``DistributedSampler`` pads the last batches with repeated samples,
which must count once. :class:`PerSampleMetric` tags each update with (rank, call number) so the
first copy of each sample can be kept after the gather; every rank then computes the same number
(every rank must call ``compute()``: a rank-0-only call hangs in all_gather, torchmetrics #626).

Metrics whose statistic is a sum (pixel errors averaged over images, accuracy) should use tensor
states with ``dist_reduce_fx="sum"`` instead; they need none of this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from core import overlap

# Tags are rank * 2**32 + call number: exact in float64 (53-bit mantissa) for 2**21 ranks.
_RANK_STRIDE = 2.0**32


def temporal_iou(a: Any, b: Any) -> Any:
    """Temporal IoU of every segment of ``a`` (N, 2: start, end) with every one of ``b`` (M, 2):
    :func:`core.overlap.temporal_iou` (the ActivityNet arithmetic; a zero union gives 0), with a
    torch path: tensors stay tensors (on their device, in their dtype, differentiable); anything
    else becomes a float64 numpy array. Returns an (N, M) matrix."""
    if not (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        return overlap.temporal_iou(a, b)
    a = torch.as_tensor(a).reshape(-1, 2)
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device).reshape(-1, 2)
    inter = (torch.minimum(a[:, None, 1], b[None, :, 1]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def box_iou(a: Any, b: Any) -> Any:
    """IoU of every box of ``a`` (N, 4: x1, y1, x2, y2) with every one of ``b`` (M, 4):
    :func:`core.overlap.box_iou` (continuous coordinates, a zero union gives 0), with a torch
    path in which tensors stay tensors."""
    if not (isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor)):
        return overlap.box_iou(a, b)
    a = torch.as_tensor(a).reshape(-1, 4)
    b = torch.as_tensor(b, dtype=a.dtype, device=a.device).reshape(-1, 4)
    w = (torch.minimum(a[:, None, 2], b[None, :, 2]) - torch.maximum(a[:, None, 0], b[None, :, 0])).clamp(min=0)
    h = (torch.minimum(a[:, None, 3], b[None, :, 3]) - torch.maximum(a[:, None, 1], b[None, :, 1])).clamp(min=0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def current_rank() -> int:
    """This process's global rank (0 without torch.distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def gather_objects(items: list) -> list:
    """Concatenate every rank's list of picklable objects, rank 0's first; ``items`` alone without
    torch.distributed. Collective: every rank must call it (e.g. per-video outputs to write files)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, items)
        return [x for part in gathered for x in part]
    return items


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows (N_rank, ...) concatenated, rank 0's first; ``rows`` alone without torch.distributed.
    The ranks may hold different counts: a streaming loader (LitData shards) gives each rank whole chunks
    of an evaluation split, so one rank may have more samples, or none (torchmetrics' gather pads and
    trims; Lightning's ``all_gather`` needs equal shapes). Collective: every rank must call it."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return rows
    from torchmetrics.utilities.distributed import gather_all_tensors

    return torch.cat(gather_all_tensors(rows.contiguous()))


def cat_rows(state: Any, width: int) -> np.ndarray:
    """A gathered list state as one float64 (rows, width) array: torchmetrics leaves it a list of
    tensors before the sync and a single tensor after a cat-reduction; both may be empty."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().to(torch.float64).numpy().reshape(-1, width)
    if len(state) == 0:
        return np.zeros((0, width), dtype=np.float64)
    return torch.cat([s.detach().cpu().to(torch.float64) for s in state], 0).numpy().reshape(-1, width)


def first_copy_only(tables: Sequence[np.ndarray], tag_cols: Sequence[int]) -> list[np.ndarray]:
    """Keep, for each sample id (column 0), only the rows of the update that first carried it.

    ``tag_cols[i]`` is the tag column of ``tables[i]``; the lowest tag of a sample over all tables
    wins, so a sample repeated by a DistributedSampler's padding counts once in every table."""
    tagged = [t[:, [0, c]] for t, c in zip(tables, tag_cols) if len(t)]
    if not tagged:
        return list(tables)
    first: dict[int, float] = {}
    for sample, tag in np.concatenate(tagged, axis=0):
        if tag < first.get(int(sample), np.inf):
            first[int(sample)] = tag
    out = []
    for table, c in zip(tables, tag_cols):
        firsts = np.array([first.get(int(v), np.nan) for v in table[:, 0]])
        out.append(table[firsts == table[:, c]] if len(table) else table)
    return out


class PerSampleMetric(Metric):
    """Base for "collect per-sample results, compute once on all ranks" metrics (ranked ones: AP,
    mAP, recall at N). A subclass declares its tables, appends rows per sample in ``update`` and
    reads them back, gathered and de-duplicated, in ``compute``::

        class MyAP(PerSampleMetric):
            def __init__(self, **kw):
                super().__init__(**kw)
                self.add_table("predictions", width=2)   # score, label
                self.add_table("targets", width=1)

            def update(self, sample_ids, preds, targets):
                tag = self.new_tag()
                for i, p, t in zip(sample_ids, preds, targets):
                    self.append_rows("predictions", i, p, tag)
                    self.append_rows("targets", i, t, tag)

            def compute(self):
                preds, targets = self.tables("predictions", "targets")  # column 0: sample id
                ...

    Tables are list states (``dist_reduce_fx="cat"``, kept on the CPU, reset each epoch); each row
    is (sample id, the caller's columns, tag). Sample ids must be integers unique over the data set
    (below 2**53). The protocol's "no ground truth" case should raise, not return NaN (OpenTAD #27)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("compute_on_cpu", True)
        super().__init__(**kwargs)
        self._updates = 0
        self._widths: dict[str, int] = {}

    def add_table(self, name: str, width: int) -> None:
        """Declare a list state of rows with ``width`` columns (besides the sample id and tag)."""
        self.add_state(name, default=[], dist_reduce_fx="cat")
        self._widths[name] = int(width)

    def new_tag(self) -> float:
        """A tag for one ``update`` call: unique over ranks, increasing with the call number."""
        self._updates += 1
        return float(current_rank()) * _RANK_STRIDE + self._updates

    def append_rows(self, name: str, sample_id: int, rows: Any, tag: float) -> None:
        """Store ``rows`` (n, width; n may be 0) of sample ``sample_id`` in table ``name``."""
        width = self._widths[name]
        rows = torch.as_tensor(rows, dtype=torch.float64).detach().cpu()
        if rows.numel() == 0 or (rows.dim() == 1 and len(rows) == width):
            rows = rows.reshape(-1, width)
        elif rows.dim() != 2 or rows.shape[1] != width:
            raise ValueError(
                f"{type(self).__name__}.{name}: rows of {width} values expected, got shape {tuple(rows.shape)}"
            )
        n = len(rows)
        sample = torch.full((n, 1), float(int(sample_id)), dtype=torch.float64)
        tags = torch.full((n, 1), float(tag), dtype=torch.float64)
        getattr(self, name).append(torch.cat([sample, rows, tags], 1))

    def tables(self, *names: str) -> list[np.ndarray]:
        """The named tables over all ranks as float64 arrays (sample id, columns...), each sample's
        rows taken from its first update only (the first-copy rule), tag column dropped."""
        full = [cat_rows(getattr(self, n), self._widths[n] + 2) for n in names]
        kept = first_copy_only(full, [self._widths[n] + 1 for n in names])
        return [t[:, :-1] for t in kept]

    def reset(self) -> None:
        super().reset()
        self._updates = 0
