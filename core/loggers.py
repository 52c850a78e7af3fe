"""Loggers whose files survive a resumed run."""

from __future__ import annotations

import csv

import pytorch_lightning as pl
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _HistoryKeepingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing ``metrics.csv`` when it starts; this one appends to
    it (taking over its header), so a resumed run keeps the metrics of its earlier attempts. Rows
    of an earlier attempt at or after the first step this attempt logs (the part of an epoch that
    was killed before its checkpoint, and is now run again) are dropped, so no step appears twice."""

    _earlier_attempt = False

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))
            self._earlier_attempt = True

    def save(self) -> None:
        if self._earlier_attempt and self.metrics:
            self._earlier_attempt = False
            self._drop_rows_from(min(int(m["step"]) for m in self.metrics))
        super().save()

    def _drop_rows_from(self, step: int) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
        kept = [row for row in rows if not row.get("step") or int(float(row["step"])) < step]
        if len(kept) == len(rows):
            return
        with self._fs.open(self.metrics_file_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)


class CSVLogger(LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that appends to the run's earlier ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _HistoryKeepingWriter(log_dir=self.log_dir)
        return self._experiment


def finish_loggers(trainer: pl.Trainer, failed: bool = False, preempted: bool = False) -> None:
    """Finish each W&B logger's run (``exit_code`` 1 on failure; marked preempting when the job is
    requeued, so the attempt's file is complete and the next attempt resumes the same run); Lightning
    finalizes the other loggers itself. An open run would be reused by the next job of an in-process
    multirun."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            run = getattr(logger, "_experiment", None)  # None: no run was started, nothing to end
            if run is not None and hasattr(run, "finish"):
                if preempted:
                    run.mark_preempting()
                run.finish(exit_code=1 if failed else 0)
                logger._experiment = None
