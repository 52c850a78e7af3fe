"""Image classification with any timm backbone: the first task, and the base of compound scaling."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from core.backbones import create_backbone
from core.io import atomic_write_text
from core.metrics import gather_rows
from core.optim import check_scheduler, configure_optimizers
from core.registry import register_models
from core.weights import load_pretrained


class ImageClassificationTask(pl.LightningModule):
    """Cross-entropy training of ``timm.create_model(backbone)`` with top-1/top-5 accuracy.

    ``optimizer`` and ``scheduler`` follow the shared contract of core.optim (timm's
    ``create_optimizer_v2`` arguments; ``{name: cosine, warmup_epochs}`` or constant).
    ``pretrained`` starts from timm's published weights (true: the backbone's default, or a tag such
    as ``resnet50.tv_in1k``; core.backbones); ``pretrained_path`` is a local weights file (timm,
    torchvision or a checkpoint of this task) and wins over ``pretrained``. A classifier of another
    size is left newly initialized, for transfer learning."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        pretrained: bool | str = False,
    ) -> None:
        super().__init__()
        check_scheduler(scheduler)
        self.save_hyperparameters()
        register_models()  # the project's own timm models (core.registry), so any of them builds by name
        self.model = create_backbone(
            backbone,
            pretrained=False if pretrained_path else pretrained,  # a user's local file wins
            num_classes=num_classes,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            **(backbone_kwargs or {}),
        )
        if pretrained_path:
            load_pretrained(self.model, pretrained_path)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        top_k = min(5, num_classes)
        metrics = MetricCollection(
            {
                "acc_top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                f"acc_top{top_k}": MulticlassAccuracy(num_classes, top_k=top_k, average="micro"),
            }
        )
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
        rows = gather_rows(rows.to(self.device)).cpu()  # ranks reading shards may hold different counts
        if not self.trainer.is_global_zero or self.trainer.sanity_checking:
            return
        names = getattr(getattr(self.trainer, "datamodule", None), "class_names", None) or []
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["index", "target", "predicted", "predicted_name", "confidence"])
        for i, (target, predicted, confidence) in enumerate(rows.tolist()):
            name = names[int(predicted)] if int(predicted) < len(names) else ""
            writer.writerow([i, int(target), int(predicted), name, f"{confidence:.6f}"])
        atomic_write_text(Path(self.trainer.default_root_dir) / "predictions.csv", buffer.getvalue())

    def predict_step(self, batch: dict, batch_idx: int) -> list[torch.Tensor]:
        """predict.py: class probabilities per image of ``batch["image"]``
        (tasks/classification/predict.py writes them)."""
        if not batch["inputs"]:  # every file of the batch was unreadable
            return []
        return list(self(batch["image"]).float().softmax(-1).cpu())

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the data set's class names and evaluation transform, so predict.py needs only the checkpoint."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if getattr(datamodule, "class_names", None):
            checkpoint["predict_preprocessing"] = {
                "class_names": [str(n) for n in datamodule.class_names],
                "mean": [float(v) for v in datamodule.mean],
                "std": [float(v) for v in datamodule.std],
                "crop_pct": float(datamodule.crop_pct),
            }

    def sample_images(self, batch) -> tuple[torch.Tensor, list[str]]:
        """Images and captions (target / prediction) for the media-logging callback."""
        images, targets = batch
        with torch.no_grad():
            predicted = self(images).argmax(-1)
        captions = [f"target {int(t)} / predicted {int(p)}" for t, p in zip(targets, predicted)]
        return images, captions

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler, model=self.model)
