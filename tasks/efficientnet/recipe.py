"""The pieces of the EfficientNet ImageNet recipe that PyTorch and timm do not have as such, written
to match the reference code (tensorflow/tpu, models/official/efficientnet):

- the schedule, ``utils.build_learning_rate`` with ``lr_decay_type='exponential'``, is core.optim's
  ``exponential`` scheduler: ``lr = lr0 * 0.97 ** floor(step / (2.4 * steps_per_epoch))``
  (``tf.train.exponential_decay``, ``staircase=True``), replaced during the first 5 epochs by
  ``lr0 * step / warmup_steps``. The decay counts from step 0, so the rate right after warm-up is
  already ``lr0 * 0.97 ** 2``.
- ``TFExponentialMovingAverage``: ``tf.train.ExponentialMovingAverage(decay, num_updates=global_step)``,
  whose decay is ``min(decay, (1 + n) / (10 + n))`` at update ``n``, over the weights and the
  batch-norm moving statistics (``utils.get_ema_vars``); evaluation uses the averaged weights.
- ``tf_weight_decay_groups``: the L2 term ``weight_decay * sum(l2_loss(v))`` over every trainable
  variable except batch normalization's, i.e. gradient ``weight_decay * v`` (coupled, as timm's
  ``rmsproptf`` applies it), with biases decayed too.

The optimizer itself is timm's ``rmsproptf`` (``RMSpropTF``), which is TF1's ``RMSPropOptimizer``:
``ms = 0.9 ms + 0.1 g^2`` with ``ms`` starting at 1, ``mom = 0.9 mom + lr g / sqrt(ms + eps)``
(epsilon inside the root, learning rate inside the momentum), ``w -= mom``."""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import nn


def tf_weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Parameter groups decaying every parameter except those of normalization layers."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    skip = {id(p) for m in model.modules() if isinstance(m, norm_types) for p in m.parameters(recurse=False)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in skip], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in skip], "weight_decay": 0.0},
    ]


def tf_ema_decay(decay: float, num_updates: int | torch.Tensor) -> torch.Tensor:
    """The decay TF's ExponentialMovingAverage uses at update ``num_updates``: min(decay, (1+n)/(10+n))."""
    n = torch.as_tensor(num_updates, dtype=torch.float64)
    return torch.clamp((1 + n) / (10 + n), max=decay)


class TFExponentialMovingAverage(WeightAveraging):
    """Weight EMA with TF's warm-up of the decay; averages parameters and buffers (batch-norm
    statistics), and validation, test and the final weights use the average.

    Lightning's ``AveragedModel`` copies the weights at its first update (after optimizer step 1)
    and calls the average with ``n_averaged`` = k at the update after step k + 1, so the decay used
    there is the reference's at ``global_step = k + 1``. (The reference mixes its first update
    with the initial weights at decay 2/11; here the first update is a copy.)"""

    def __init__(
        self, decay: float = 0.9999, device: torch.device | str | int | None = None, use_buffers: bool = True
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay={decay} must be in [0, 1)")
        self.decay = decay

        def average(averaged: torch.Tensor, current: torch.Tensor, n_averaged: torch.Tensor) -> torch.Tensor:
            d = tf_ema_decay(decay, n_averaged + 1).to(averaged.device)
            if not averaged.is_floating_point():  # e.g. num_batches_tracked: follow the model
                return current
            return averaged + (current - averaged) * (1 - d).to(averaged.dtype)

        super().__init__(device=device, use_buffers=use_buffers, avg_fn=average)
