"""Report corrupt samples that a DataModule skipped (when ``skip_corrupt`` is enabled)."""

from __future__ import annotations

import logging

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class ReportSkippedSamples(pl.Callback):
    """Logs ``data/skipped_samples`` each epoch for DataModules with a ``skipped_samples`` count,
    and warns when any sample was skipped."""

    def _report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        count = getattr(trainer.datamodule, "skipped_samples", None)
        if count is None:
            return
        pl_module.log("data/skipped_samples", float(count), reduce_fx="sum", sync_dist=True)
        if count and trainer.is_global_zero:
            log.warning("%d corrupt samples skipped so far (see the warnings above for the files)", count)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module)
