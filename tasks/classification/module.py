"""Image classification with any timm backbone: the first task, and the base of compound scaling."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import timm
import torch
from timm.optim import create_optimizer_v2
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

import tasks.efficientnet  # noqa: F401  (registers the compound-scaled families with timm)
from core.io import atomic_write_text
from core.weights import load_pretrained


def cosine_with_warmup(total_steps: int, warmup_steps: int, min_factor: float = 0.0):
    """LR factor per step: linear warm-up, then half a cosine down to ``min_factor``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


class ImageClassificationTask(pl.LightningModule):
    """Cross-entropy training of ``timm.create_model(backbone)`` with top-1/top-5 accuracy.

    ``optimizer`` holds keyword arguments of ``timm.optim.create_optimizer_v2`` (``opt``, ``lr``,
    ``weight_decay``, ...); ``lr_schedule`` is ``cosine`` (per step, after ``warmup_epochs``) or
    ``constant``. ``pretrained_path`` is a local weights file (timm, torchvision or a checkpoint of
    this task); a classifier of another size is left newly initialized, for transfer learning."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        backbone_kwargs: Optional[dict[str, Any]] = None,
        pretrained_path: Optional[str] = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: Optional[dict[str, Any]] = None,
        lr_schedule: str = "cosine",
        warmup_epochs: float = 0.0,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"task.lr_schedule={lr_schedule!r}: choose 'cosine' or 'constant'")
        self.save_hyperparameters()
        self.model = timm.create_model(
            backbone, pretrained=False, num_classes=num_classes, drop_rate=drop_rate,
            drop_path_rate=drop_path_rate, **(backbone_kwargs or {}),
        )
        if pretrained_path:
            load_pretrained(self.model, pretrained_path)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top_k = min(5, num_classes)
        metrics = MetricCollection({
            "acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
            f"acc_top{top_k}": MulticlassAccuracy(num_classes, top_k=top_k, average="micro"),
        })
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._test_rows: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        found = getattr(datamodule, "num_classes", None)
        if found is not None and found != self.hparams.num_classes:
            raise ValueError(
                f"task.num_classes={self.hparams.num_classes} but the data set has {found} classes "
                "(set task.num_classes=${data.num_classes})"
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        loss = self.criterion(self(images), targets)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(targets))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.log("val/loss", self.criterion(logits, targets), sync_dist=True, batch_size=len(targets))
        self.val_metrics.update(logits, targets)
        self.log_dict(self.val_metrics, prog_bar=True)

    def test_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        logits = self(images)
        self.test_metrics.update(logits, targets)
        self.log_dict(self.test_metrics)
        probs = logits.softmax(-1)
        confidence, predicted = probs.max(-1)
        self._test_rows.append(torch.stack([targets.float(), predicted.float(), confidence], 1).cpu())

    def on_test_epoch_start(self) -> None:
        self._test_rows = []

    def on_test_epoch_end(self) -> None:
        """Write test predictions (target, predicted class, confidence) to predictions.csv."""
        rows = torch.cat(self._test_rows) if self._test_rows else torch.zeros(0, 3)
        gathered = self.all_gather(rows.to(self.device))
        if not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        rows = gathered.reshape(-1, 3).cpu() if gathered.dim() == 3 else gathered.cpu()
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None) or []
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["index", "target", "predicted", "predicted_name", "confidence"])
        for i, (target, predicted, confidence) in enumerate(rows.tolist()):
            name = names[int(predicted)] if int(predicted) < len(names) else ""
            writer.writerow([i, int(target), int(predicted), name, f"{confidence:.6f}"])
        atomic_write_text(Path(self.trainer.default_root_dir) / "predictions.csv", buffer.getvalue())

    def sample_images(self, batch) -> tuple[torch.Tensor, list[str]]:
        """Images and captions (target / prediction) for the media-logging callback."""
        images, targets = batch
        with torch.no_grad():
            predicted = self(images).argmax(-1)
        captions = [f"target {int(t)} / predicted {int(p)}" for t, p in zip(targets, predicted)]
        return images, captions

    def configure_optimizers(self):
        optimizer = create_optimizer_v2(self.model, **(self.hparams.optimizer or {"opt": "adamw", "lr": 1e-3}))
        if self.hparams.lr_schedule == "constant":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        per_epoch = total / max(1, self.trainer.max_epochs or 1)
        schedule = cosine_with_warmup(total, int(self.hparams.warmup_epochs * per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
