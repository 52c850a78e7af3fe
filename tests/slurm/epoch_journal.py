"""A Lightning callback for the cluster tests: records which epochs each SLURM attempt trained."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytorch_lightning as pl


class EpochJournal(pl.Callback):
    """Append one JSON line per epoch start and end, from every rank, to ``path``: the rank, the
    epoch, the global step and ``SLURM_RESTART_COUNT`` (0 for the first attempt, 1 after a requeue)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _write(self, trainer: pl.Trainer, event: str) -> None:
        record = {
            "event": event,
            "rank": trainer.global_rank,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "world_size": trainer.world_size,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # one short O_APPEND write per line: ranks do not interleave
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "start")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, "end")
