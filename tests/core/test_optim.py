"""core.optim: the shared optimizer contract, its schedules worked by hand, and its errors."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from core.optim import check_scheduler, configure_optimizers, cosine_with_warmup, exponential_decay_with_warmup


def test_cosine_with_warmup_by_hand():
    f = cosine_with_warmup(total_steps=10, warmup_steps=2, min_factor=0.1)
    assert [f(0), f(1)] == [0.5, 1.0]  # (step + 1) / warmup
    assert f(2) == pytest.approx(1.0)  # the cosine starts at the top
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # halfway: 0.55
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)


def test_exponential_decay_with_warmup_by_hand():
    # 10 steps per epoch: warm-up over 5 epochs (50 steps), decay every 2.4 epochs (24 steps)
    f = exponential_decay_with_warmup(10, warmup_epochs=5, decay_epochs=2.4, decay_factor=0.97)
    assert [f(0), f(25)] == [0.0, 0.5]
    assert f(50) == pytest.approx(0.97**2)  # floor(50 / 24) = 2: the decay counts from step 0
    assert f(72) == pytest.approx(0.97**3)


def test_scheduler_config_errors_name_the_key():
    assert check_scheduler(None) == {"name": "constant"}
    with pytest.raises(ValueError, match=r"task.scheduler.name='linear'"):
        check_scheduler({"name": "linear"})
    with pytest.raises(ValueError, match=r"unknown keys \['decay_epochs'\] for 'cosine'"):
        check_scheduler({"name": "cosine", "decay_epochs": 2})


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(3, 2)


def test_timm_optimizer_with_defaults_and_a_step_schedule():
    module = _Tiny()
    constant = configure_optimizers(module, {"opt": "sgd", "lr": 0.1, "momentum": 0.9})
    assert isinstance(constant, torch.optim.SGD) and constant.param_groups[0]["lr"] == 0.1
    # no default in code: the task's YAML is the one default, and a missing optimizer says so
    for incomplete in (None, {"opt": "adamw"}):
        with pytest.raises(ValueError, match=r"task.optimizer=.* lacks .*conf/task/<task>.yaml"):
            configure_optimizers(module, incomplete)
    out = configure_optimizers(module, {"opt": "sgd", "lr": 1.0}, {"name": "step", "step_epochs": 2, "gamma": 0.5})
    assert out["lr_scheduler"]["interval"] == "epoch"
    scheduler, rates = out["lr_scheduler"]["scheduler"], []
    for _ in range(5):
        rates.append(out["optimizer"].param_groups[0]["lr"])
        out["optimizer"].step()
        scheduler.step()
    assert rates == [1.0, 1.0, 0.5, 0.5, 0.25]
