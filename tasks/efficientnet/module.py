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

    - ``lr_reference_batch_size``: when set, ``optimizer.lr`` is the rate per that many images,
      scaled by the global batch (batch size x devices x accumulation): 0.016 per 256 images;
    - ``weight_decay_exclude``: ``norm`` decays every weight but the normalization layers' (the
      reference's L2 term skips only batch-norm variables), ``norm_and_bias`` is timm's default
      (biases are not decayed either)."""

    def __init__(
        self,
        *args: Any,
        lr_reference_batch_size: int | None = None,
        weight_decay_exclude: str = "norm",
        **kwargs: Any,
    ) -> None:
        if weight_decay_exclude not in WEIGHT_DECAY_EXCLUDE:
            raise ValueError(
                f"task.weight_decay_exclude={weight_decay_exclude!r}: choose one of {WEIGHT_DECAY_EXCLUDE}"
            )
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()

    def global_batch_size(self) -> int:
        datamodule = getattr(self.trainer, "datamodule", None)
        per_device = int(getattr(datamodule, "batch_size", 0) or 0)
        if per_device <= 0:
            raise ValueError(
                "task.lr_reference_batch_size needs the DataModule's batch_size to scale the learning rate"
            )
        return per_device * self.trainer.world_size * self.trainer.accumulate_grad_batches

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
