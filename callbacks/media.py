"""Send sample images to the experiment loggers that can show them (W&B, TensorBoard)."""

from __future__ import annotations

import torch
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid


def to_displayable(images: torch.Tensor) -> torch.Tensor:
    """Min-max scale each (normalized) image to [0, 1] for display."""
    flat = images.detach().float().flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = (high - low).clamp_min(1e-6)
    return ((images.detach().float() - low[:, None, None, None]) / scale[:, None, None, None]).clamp(0, 1)


def log_images(trainer: pl.Trainer, key: str, images: torch.Tensor, captions: list[str]) -> None:
    """Log a batch of (C, H, W) images to every logger that takes images."""
    images = to_displayable(images.cpu())
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=list(images), caption=captions, step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, make_grid(images, nrow=8), global_step=trainer.global_step)


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
        log_images(trainer, "val/samples", images[: self.max_images], captions[: self.max_images])
