"""The classification task as the EfficientNet recipe trains it: the learning rate given per
``lr_reference_batch_size`` images and scaled to the global batch, and weight decay applied as the
reference applies it (see ``recipe.py``). The schedule is core.optim's (``exponential`` is the
reference's staircase decay)."""

from __future__ import annotations

from typing import Any

from core.optim import configure_optimizers
from tasks.classification.module import ImageClassificationTask
from tasks.efficientnet.recipe import tf_weight_decay_groups

WEIGHT_DECAY_EXCLUDE = ("norm", "norm_and_bias")


class EfficientNetTask(ImageClassificationTask):
    """``ImageClassificationTask`` plus:

    - ``batch_size``: the per-device batch size (``${data.batch_size}``), known to the task so the
      learning rate scales without reading the DataModule back;
    - ``lr_reference_batch_size``: when set, ``optimizer.lr`` is the rate per that many images,
      scaled by the global batch (batch size x devices x accumulation): 0.016 per 256 images;
    - ``weight_decay_exclude``: ``norm`` decays every weight but the normalization layers' (the
      reference's L2 term skips only batch-norm variables), ``norm_and_bias`` is timm's default
      (biases are not decayed either)."""

    def __init__(
        self,
        backbone: str,
        num_classes: int,
        image_size: int,
        batch_size: int,
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained_path: str | None = None,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        label_smoothing: float = 0.0,
        optimizer: dict[str, Any] | None = None,
        scheduler: dict[str, Any] | None = None,
        channels_last: bool = False,
        lr_reference_batch_size: int | None = None,
        weight_decay_exclude: str = "norm",
        pretrained: bool | str = False,
    ) -> None:
        if weight_decay_exclude not in WEIGHT_DECAY_EXCLUDE:
            raise ValueError(
                f"task.weight_decay_exclude={weight_decay_exclude!r}: choose one of {WEIGHT_DECAY_EXCLUDE}"
            )
        if batch_size <= 0:
            raise ValueError(f"task.batch_size={batch_size}: must be positive (it is ${{data.batch_size}})")
        super().__init__(
            backbone=backbone,
            num_classes=num_classes,
            image_size=image_size,
            backbone_kwargs=backbone_kwargs,
            pretrained_path=pretrained_path,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
            label_smoothing=label_smoothing,
            optimizer=optimizer,
            scheduler=scheduler,
            channels_last=channels_last,
            pretrained=pretrained,
        )
        self.save_hyperparameters()

    def global_batch_size(self) -> int:
        """Images per optimizer step: the per-device batch x devices x gradient accumulation."""
        return self.hparams.batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def scaled_lr(self) -> float:
        """``optimizer.lr``, read as the rate per ``lr_reference_batch_size`` images when that is set."""
        lr = float((self.hparams.optimizer or {}).get("lr", 1e-3))
        reference = self.hparams.lr_reference_batch_size
        return lr * self.global_batch_size() / reference if reference else lr

    def configure_optimizers(self):
        options = {**(self.hparams.optimizer or {}), "lr": self.scaled_lr()}
        params: Any = self.model
        if self.hparams.weight_decay_exclude == "norm":
            params = tf_weight_decay_groups(self.model, float(options.pop("weight_decay", 0.0)))
        return configure_optimizers(self, options, self.hparams.scheduler, model=params)
