"""Test helpers for training from shards: a DataModule whose train loader also yields each sample's
index, and a callback that journals the indices every rank trained on at every step."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytorch_lightning as pl

from datamodules.fgvc.class_folders import ClassFolderDataModule


class IndexedTrainClassFolders(ClassFolderDataModule):
    """data=fgvc_imagefolder whose shard train loader yields (image, target, index) like its val and
    test loaders (the FGVC task reads batch[0] and batch[1]), so a journal can name the samples."""

    indexed_splits = ("train", "val", "test")


class SampleJournal(pl.Callback):
    """One JSON line per training step and rank: the pid (one per attempt), the rank, the epoch, the
    global step after it and the indices of the batch's samples. ``pace`` (seconds) slows each step, so
    a test can kill the run mid-epoch on a fast machine too."""

    def __init__(self, path: str, pace: float = 0.0) -> None:
        self.path = Path(path)
        self.pace = pace

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        record = {
            "pid": os.getpid(),
            "attempt": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
            "rank": trainer.global_rank,
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "indices": [int(i) for i in batch[2]],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # one short O_APPEND write per line: ranks do not interleave
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        time.sleep(self.pace)
