"""The optimizer contract every task shares: two plain-valued constructor arguments.

``optimizer``: keyword arguments of timm's ``create_optimizer_v2`` (``opt``, ``lr``,
``weight_decay``, ``momentum``, ``eps``, ...; timm leaves norm and bias parameters without weight
decay). ``scheduler``: ``null`` / ``{name: constant}`` (the LR stays put) or ``{name: cosine,
warmup_epochs: 1.0, min_factor: 0.0}`` (linear warm-up over ``warmup_epochs``, then half a cosine
down to ``min_factor * lr``) or ``{name: exponential, warmup_epochs: 5, decay_epochs: 2.4,
decay_factor: 0.97}`` (the EfficientNet reference's staircase decay), stepped every optimizer
step; or ``{name: step, step_epochs: 10, gamma: 0.5}`` (the LR times ``gamma`` every ``step_epochs``
epochs, stepped per epoch). In a task config::

    task:
      optimizer: {opt: adamw, lr: 1e-3, weight_decay: 1e-4}
      scheduler: {name: cosine, warmup_epochs: 1.0}

and in the LightningModule::

    def configure_optimizers(self):
        return configure_optimizers(self, self.hparams.optimizer, self.hparams.scheduler)

Both stay plain dicts in the saved hyper-parameters, so checkpoints load with ``weights_only=True``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from timm.optim import create_optimizer_v2

SCHEDULERS = ("constant", "cosine", "exponential", "step")
SCHEDULER_KEYS = {
    "constant": set(),
    "cosine": {"warmup_epochs", "min_factor"},
    "exponential": {"warmup_epochs", "decay_epochs", "decay_factor"},
    "step": {"step_epochs", "gamma"},
}


def cosine_with_warmup(total_steps: int, warmup_steps: int, min_factor: float = 0.0) -> Callable[[int], float]:
    """LR factor per step: linear warm-up to 1 over ``warmup_steps``, then half a cosine down to
    ``min_factor`` at ``total_steps`` (SGDR without restarts, Loshchilov & Hutter 2017)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def exponential_decay_with_warmup(
    steps_per_epoch: float, warmup_epochs: float = 5.0, decay_epochs: float = 2.4, decay_factor: float = 0.97
) -> Callable[[int], float]:
    """LR factor per step of the EfficientNet reference (tensorflow/tpu efficientnet/utils.py,
    ``build_learning_rate``, exponential): ``decay_factor ** floor(step / (decay_epochs *
    steps_per_epoch))`` (``tf.train.exponential_decay``, staircase, counted from step 0), replaced
    by ``step / warmup_steps`` while ``step < warmup_steps = int(warmup_epochs * steps_per_epoch)``."""
    warmup_steps = int(warmup_epochs * steps_per_epoch)
    decay_steps = decay_epochs * steps_per_epoch
    if decay_steps <= 0:
        raise ValueError(f"scheduler.decay_epochs={decay_epochs} x {steps_per_epoch} steps per epoch must be > 0")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return decay_factor ** math.floor(step / decay_steps)

    return factor


def check_scheduler(scheduler: dict[str, Any] | None) -> dict[str, Any]:
    """The scheduler config with its defaults; a wrong name or key fails here, at instantiation."""
    config = {"name": "constant", **(scheduler or {})}
    if config["name"] not in SCHEDULERS:
        raise ValueError(f"task.scheduler.name={config['name']!r}: choose one of {SCHEDULERS}")
    allowed = {"name"} | SCHEDULER_KEYS[config["name"]]
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise ValueError(f"task.scheduler: unknown keys {unknown} for {config['name']!r} (allowed: {sorted(allowed)})")
    return config


def create_optimizer(model: Any, optimizer: dict[str, Any] | None) -> torch.optim.Optimizer:
    """timm's ``create_optimizer_v2(model, **optimizer)``. ``model`` is a module or a list of parameter
    groups. There is no default in code: the task's YAML (conf/task/<task>.yaml) is the one default."""
    missing = [key for key in ("opt", "lr") if key not in (optimizer or {})]
    if missing:
        raise ValueError(
            f"task.optimizer={optimizer!r} lacks {missing}: give timm's create_optimizer_v2 arguments, at least "
            "{opt, lr} (conf/task/<task>.yaml holds each task's default)"
        )
    return create_optimizer_v2(model, **optimizer)


def configure_optimizers(
    module: pl.LightningModule,
    optimizer: dict[str, Any] | None = None,
    scheduler: dict[str, Any] | None = None,
    model: Any = None,
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns under the contract: the optimizer of
    ``model`` (a module or parameter groups; default: ``module``) and, unless the schedule is
    constant, a per-step LambdaLR sized from ``trainer.estimated_stepping_batches``."""
    config = check_scheduler(scheduler)
    opt = create_optimizer(model if model is not None else module, optimizer)
    if config["name"] == "constant":
        return opt
    if config["name"] == "step":
        every, gamma = int(config.get("step_epochs", 1)), float(config.get("gamma", 0.1))
        if every < 1:
            raise ValueError(f"task.scheduler.step_epochs={every}: must be >= 1")
        by_epoch = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: gamma ** (epoch // every))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": by_epoch, "interval": "epoch"}}
    trainer = module.trainer
    total = max(1, int(trainer.estimated_stepping_batches))
    per_epoch = total / max(1, trainer.max_epochs or 1)
    warmup = int(float(config.get("warmup_epochs", 0.0)) * per_epoch)
    if config["name"] == "exponential":
        schedule = exponential_decay_with_warmup(
            per_epoch,
            float(config.get("warmup_epochs", 5.0)),
            float(config.get("decay_epochs", 2.4)),
            float(config.get("decay_factor", 0.97)),
        )
    else:
        schedule = cosine_with_warmup(total, warmup, float(config.get("min_factor", 0.0)))
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": lr_scheduler, "interval": "step"}}
