"""Report the samples a DataModule skipped (core.data.CountsSkippedSamples) instead of failing."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from core.data import CountsSkippedSamples

log = logging.getLogger(__name__)


class ReportSkippedSamples(pl.Callback):
    """Logs ``data/skipped_samples`` each training epoch for DataModules that count skipped samples
    (summed over ranks), and warns when any sample was skipped."""

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not isinstance(datamodule, CountsSkippedSamples):
            return
        count = int(datamodule.skipped_samples)
        pl_module.log("data/skipped_samples", float(count), reduce_fx="sum", sync_dist=True)
        if count and trainer.is_global_zero:
            log.warning("%d corrupt samples skipped so far (see the warnings above for the files)", count)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module)
