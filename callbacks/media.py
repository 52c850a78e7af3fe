"""Log sample validation images with their captions (through core.media, to any logger)."""

from __future__ import annotations

import pytorch_lightning as pl

from core.media import log_image, to_displayable


class LogSampleImages(pl.Callback):
    """Logs the first validation batch of each epoch, with captions, for tasks that define
    ``sample_images(batch) -> (images, captions)``."""

    def __init__(self, max_images: int = 16) -> None:
        self.max_images = max_images

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx != 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not hasattr(pl_module, "sample_images") or not trainer.loggers:
            return
        images, captions = pl_module.sample_images(batch)
        images = to_displayable(images[: self.max_images].cpu())
        log_image(trainer, "val/samples", images, captions=list(captions[: self.max_images]))
