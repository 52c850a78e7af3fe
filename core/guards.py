"""Checks core.training adds to every Trainer, whatever the task or the callbacks config:

- ``FiniteLossGuard``: a NaN/inf loss stops the run at once, naming the step and the samples whose
  inputs hold non-finite values, before the backward pass corrupts the weights.
- ``DataContractCheck``: at start-up, the task's ``num_classes`` / ``feature_dim`` must equal what
  the data holds (a DataModule's ``data_facts``, measured from its files, else its attributes).
- ``StampTaskClass``: each checkpoint records the task class that saved it, so loading it into
  another task fails with one line instead of a constructor TypeError.
- ``RequeueAtBatchEnd`` (core.cluster): under SLURM, the requeue signal is acted on at a batch end,
  on every rank together."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from core.checkpoint import TASK_CLASS_KEY, qualified_name
from core.cluster import RequeueAtBatchEnd

CHECKED_FACTS = ("num_classes", "feature_dim")
FACT_NOUNS = {"num_classes": "classes", "feature_dim": "features per stream"}
NAME_KEYS = ("video", "videos", "name", "names", "path", "paths", "file", "files", "clip", "clips", "id", "ids")


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class DataContractError(ValueError):
    """The task was built for another number of classes or feature width than the data holds."""


def _batch_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor) and batch.ndim > 0:
        return batch.shape[0]
    if isinstance(batch, dict):
        for value in batch.values():
            n = _batch_size(value)
            if n is not None:
                return n
    if isinstance(batch, (list, tuple)) and batch and not isinstance(batch[0], str):
        return _batch_size(batch[0])
    return None


def _nonfinite_rows(value: Any, n: int, where: str, found: dict[str, set[int]]) -> None:
    """Collect, per input field, the sample indices whose floating-point values are not finite."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() and value.ndim > 0 and value.shape[0] == n:
            bad = ~torch.isfinite(value.detach().reshape(n, -1)).all(dim=1)
            if bad.any():
                found[where] = set(torch.nonzero(bad).flatten().tolist())
    elif isinstance(value, dict):
        for key, item in value.items():
            _nonfinite_rows(item, n, f"{where}[{key!r}]", found)
    elif isinstance(value, (list, tuple)):
        for k, item in enumerate(value):
            if isinstance(item, torch.Tensor) and item.ndim > 0 and len(value) == n:
                continue  # per-sample lists (e.g. ground truth) are checked as a whole below
            _nonfinite_rows(item, n, f"{where}[{k}]", found)
        if len(value) == n and all(isinstance(t, torch.Tensor) for t in value):
            bad = {k for k, t in enumerate(value) if t.is_floating_point() and not torch.isfinite(t).all()}
            if bad:
                found[where] = bad


def _sample_names(batch: Any, n: int) -> list[str] | None:
    if isinstance(batch, dict):
        for key in NAME_KEYS:
            names = batch.get(key)
            if isinstance(names, (list, tuple)) and len(names) == n and all(isinstance(s, str) for s in names):
                return list(names)
    return None


def describe_nonfinite_inputs(batch: Any) -> str:
    """Which samples of ``batch`` hold NaN/inf values, by name where the batch carries names."""
    n = _batch_size(batch)
    if n is None:
        return ""
    found: dict[str, set[int]] = {}
    _nonfinite_rows(batch, n, "batch", found)
    if not found:
        return (
            "no input value of the batch is NaN/inf, so the model diverged (lower the learning rate or clip gradients)"
        )
    names = _sample_names(batch, n)
    parts = []
    for where, rows in found.items():
        samples = [names[i] if names else f"#{i}" for i in sorted(rows)]
        parts.append(f"{where} of sample{'s' if len(samples) > 1 else ''} {', '.join(samples[:5])}")
    return "non-finite input values in " + "; ".join(parts)


class FiniteLossGuard(pl.Callback):
    """Stop the run with ``NonFiniteLossError`` when a training loss is NaN or infinite."""

    def __init__(self) -> None:
        self._batch: Any = None
        self._batch_idx = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch, self._batch_idx = batch, batch_idx

    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:  # every rank stops together, or the others hang in all-reduce
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        where = f"at global step {trainer.global_step} (epoch {trainer.current_epoch}, batch {self._batch_idx})"
        if bool(torch.isfinite(loss.detach()).all()):
            raise NonFiniteLossError(f"training loss is not finite on another rank {where}; see that rank's error")
        value = loss.detach().flatten()[0].item() if loss.numel() else float("nan")
        raise NonFiniteLossError(
            f"training loss is {value} {where}; {describe_nonfinite_inputs(self._batch)}. "
            "The run stopped; the last good checkpoint is kept."
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batch = None


def data_facts(datamodule: Any) -> dict[str, tuple[int, str]]:
    """``key: (value, where it was measured)`` for the checked facts: what a DataModule measured
    from its files (``data_facts``, with ``source`` or ``<key>_source``), else its attributes."""
    facts = dict(getattr(datamodule, "data_facts", None) or {})
    default = str(facts.get("source") or type(datamodule).__name__)
    out = {}
    for key in CHECKED_FACTS:
        if isinstance(facts.get(key), int):
            out[key] = (facts[key], str(facts.get(f"{key}_source") or default))
        elif isinstance(getattr(datamodule, key, None), int):
            out[key] = (getattr(datamodule, key), f"data.{key} of {type(datamodule).__name__}")
    return out


class DataContractCheck(pl.Callback):
    """At setup (after the DataModule's), compare the task's ``num_classes`` and ``feature_dim``
    hyper-parameters with the data's."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        hparams = getattr(pl_module, "hparams", {}) or {}
        for key, (data_value, source) in data_facts(datamodule).items():
            task_value = hparams.get(key)
            if isinstance(task_value, int) and task_value != data_value:
                raise DataContractError(
                    f"task.{key}={task_value} but the data set has {data_value} {FACT_NOUNS[key]} "
                    f"({source}); set task.{key}=${{data.{key}}} or fix data.{key}"
                )


class StampTaskClass(pl.Callback):
    """Record the saving task's class in every checkpoint (``task_class``)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[TASK_CLASS_KEY] = qualified_name(pl_module)


def guards() -> list[pl.Callback]:
    return [FiniteLossGuard(), DataContractCheck(), StampTaskClass(), RequeueAtBatchEnd()]
