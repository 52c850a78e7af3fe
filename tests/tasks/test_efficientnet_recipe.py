"""The EfficientNet paper's ImageNet recipe: the composed experiment config carries the reference
code's values, and the pieces PyTorch lacks (TF RMSProp semantics, the staircase schedule, TF's
EMA, L2 on all but batch norm) behave as the reference's formulas, worked by hand."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from timm.optim import create_optimizer_v2
from torch import nn

from core.optim import exponential_decay_with_warmup
from tasks.efficientnet.recipe import TFExponentialMovingAverage, tf_ema_decay, tf_weight_decay_groups
from tests.conftest import compose_config


def test_b0_config_composes_the_paper_recipe(tmp_path):
    cfg = compose_config("train", ["experiment=efficientnet_b0"], tmp_path)
    task, data = cfg.task, cfg.data
    assert task._target_ == "tasks.efficientnet.module.EfficientNetTask"
    assert task.backbone == "compound_scaled_efficientnet_b0" and data.image_size == 224
    # RMSProp decay 0.9, momentum 0.9, epsilon 0.001 (utils.build_optimizer), TF semantics: rmsproptf
    assert dict(task.optimizer) == {
        "opt": "rmsproptf",
        "lr": 0.016,
        "alpha": 0.9,
        "momentum": 0.9,
        "eps": 0.001,
        "weight_decay": 1e-5,
    }
    # base_learning_rate 0.016 per 256 images, warm-up 5 epochs, x0.97 every 2.4 epochs
    assert task.lr_reference_batch_size == 256
    assert dict(task.scheduler) == {
        "name": "exponential",
        "warmup_epochs": 5,
        "decay_epochs": 2.4,
        "decay_factor": 0.97,
    }
    assert task.weight_decay_exclude == "norm"
    # batch_norm_momentum 0.99 (PyTorch's momentum is 1 - decay), epsilon 1e-3
    assert task.backbone_kwargs.bn_momentum == pytest.approx(1 - 0.99) and task.backbone_kwargs.bn_eps == 0.001
    # moving_average_decay 0.9999 with TF's num_updates warm-up
    assert cfg.callbacks.ema._target_ == "tasks.efficientnet.recipe.TFExponentialMovingAverage"
    assert cfg.callbacks.ema.decay == 0.9999
    # AutoAugment policy v0, bicubic resizing, the reference's random crop and 0.875 centre crop
    assert data.augment.auto_augment == "v0" and data.interpolation == "bicubic"
    assert list(data.augment.scale) == [0.08, 1.0] and list(data.augment.ratio) == pytest.approx([3 / 4, 4 / 3])
    assert data.crop_pct == 0.875
    # survival_prob 0.8, B0's dropout 0.2, label smoothing 0.1, 350 epochs
    assert task.drop_path_rate == 0.2 and task.drop_rate == 0.2 and task.label_smoothing == 0.1
    assert cfg.trainer.max_epochs == 350


@pytest.mark.parametrize("variant, dropout, size", [("b3", 0.3, 300), ("b7", 0.5, 600)])
def test_variants_inherit_the_recipe_and_change_only_their_facts(variant, dropout, size, tmp_path):
    b0 = compose_config("train", ["experiment=efficientnet_b0"], tmp_path / "b0")
    cfg = compose_config("train", [f"experiment=efficientnet_{variant}"], tmp_path / variant)
    assert cfg.task.drop_rate == dropout and cfg.data.image_size == size
    assert cfg.task.backbone == f"compound_scaled_efficientnet_{variant}"
    for key in ("optimizer", "scheduler", "lr_reference_batch_size", "drop_path_rate", "label_smoothing"):
        assert cfg.task[key] == b0.task[key], key
    assert cfg.data.augment == b0.data.augment and cfg.callbacks.ema == b0.callbacks.ema


def test_cosine_adamw_stays_a_named_preset(tmp_path):
    cfg = compose_config("train", ["experiment=efficientnet_b0", "efficientnet_recipe=cosine_adamw"], tmp_path)
    assert dict(cfg.task.optimizer) == {"opt": "adamw", "lr": 0.01, "weight_decay": 0.02}
    assert dict(cfg.task.scheduler) == {"name": "cosine", "warmup_epochs": 1.0}
    assert cfg.task.lr_reference_batch_size is None and "ema" not in cfg.callbacks
    assert cfg.task.backbone == "compound_scaled_efficientnet_b0"  # the variant's facts are kept


def test_rmsproptf_is_tf1_rmsprop_by_hand():
    # tf.train.RMSPropOptimizer(lr, decay=0.9, momentum=0.9, epsilon=1e-3), ms initialized to 1:
    #   ms <- 0.9 ms + 0.1 g^2;  mom <- 0.9 mom + lr g / sqrt(ms + eps);  w <- w - mom
    # plus the L2 term's gradient wd * w (weight_decay * l2_loss = wd * w^2 / 2).
    w = nn.Parameter(torch.tensor([1.0]))
    opt = create_optimizer_v2(
        [{"params": [w], "weight_decay": 0.1}], opt="rmsproptf", lr=0.5, alpha=0.9, momentum=0.9, eps=1e-3
    )
    ms, mom, value = 1.0, 0.0, 1.0
    for step, (grad, lr) in enumerate([(2.0, 0.5), (-1.0, 0.25), (0.5, 0.25)]):
        for group in opt.param_groups:
            group["lr"] = lr
        w.grad = torch.tensor([grad])
        opt.step()
        g = grad + 0.1 * value
        ms = 0.9 * ms + 0.1 * g * g
        mom = 0.9 * mom + lr * g / math.sqrt(ms + 1e-3)
        value -= mom
        assert w.item() == pytest.approx(value, rel=1e-6), step
    # the first step by hand: g = 2.1, ms = 0.9 + 0.441 = 1.341, mom = 0.5 * 2.1 / sqrt(1.342)
    assert 1.0 - 0.5 * 2.1 / math.sqrt(1.342) == pytest.approx(0.0936, abs=1e-4)


def test_exponential_schedule_is_the_reference_staircase_with_warmup():
    # 10 steps per epoch, warm-up 0.5 epochs (5 steps), decay 0.97 every 0.4 epochs (4 steps)
    factor = exponential_decay_with_warmup(10, warmup_epochs=0.5, decay_epochs=0.4, decay_factor=0.97)
    assert [factor(s) for s in range(5)] == [0.0, 0.2, 0.4, 0.6, 0.8]  # lr0 * step / warmup_steps
    # the decay counts from step 0: step 5 is in the second 4-step stair, step 8 in the third
    assert [factor(s) for s in (5, 7, 8, 11, 12)] == pytest.approx([0.97, 0.97, 0.97**2, 0.97**2, 0.97**3])
    # B0 on ImageNet at batch 2048: 625.57 steps per epoch, warm-up int(5 * 625.57) = 3127 steps
    imagenet = exponential_decay_with_warmup(1281167 / 2048)
    assert imagenet(3126) == pytest.approx(3126 / 3127) and imagenet(3127) == pytest.approx(0.97**2)


def test_tf_ema_decay_warms_up_and_the_callback_averages_with_it():
    assert tf_ema_decay(0.9999, 0).item() == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert tf_ema_decay(0.9999, 10).item() == pytest.approx(11 / 20)
    assert tf_ema_decay(0.9999, 10**6).item() == pytest.approx(0.9999)
    ema = TFExponentialMovingAverage(decay=0.9999)
    average = ema._kwargs["avg_fn"]
    # Lightning calls the average with n_averaged = 1 after the second optimizer step: TF's step 2
    out = average(torch.tensor([1.0]), torch.tensor([5.0]), torch.tensor(1))
    assert out.item() == pytest.approx(0.25 * 1.0 + 0.75 * 5.0)  # decay (1 + 2) / (10 + 2) = 0.25


def test_weight_decay_skips_only_batch_norm():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = tf_weight_decay_groups(model, 1e-5)
    named = {id(p): n for n, p in model.named_parameters()}
    assert sorted(named[id(p)] for p in decay["params"]) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert sorted(named[id(p)] for p in no_decay["params"]) == ["1.bias", "1.weight"]
    assert decay["weight_decay"] == 1e-5 and no_decay["weight_decay"] == 0.0


class RecordLearningRate(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        group = trainer.optimizers[0].param_groups[0]
        self.initial, self.current = group["initial_lr"], group["lr"]
        self.weight_decays = sorted({g["weight_decay"] for g in trainer.optimizers[0].param_groups})
        self.steps_per_run = trainer.estimated_stepping_batches
        trainer.should_stop = True  # one step is all this test needs


@pytest.mark.usefixtures("one_thread")
def test_learning_rate_is_per_256_images_and_starts_the_warm_up_at_zero(tmp_path, shared_data_dir):
    cfg = compose_config(
        "train",
        [
            "experiment=efficientnet_b0",
            "data=shapes",
            "data.image_size=32",
            "data.batch_size=8",
            "data.num_workers=0",
            "task.backbone=compound_scaled_efficientnet",
            "+task.backbone_kwargs.width_multiplier=0.25",
            "+task.backbone_kwargs.depth_multiplier=0.34",
            "data.generator.train_per_class=2",
            "data.generator.val_per_class=1",
            "data.generator.test_per_class=1",
            f"data.root={tmp_path / 'shapes'}",
        ],
        tmp_path / "run",
        shared_data_dir,
    )
    task = instantiate(cfg.task, _convert_="all")
    datamodule = instantiate(cfg.data)
    record = RecordLearningRate()
    trainer = pl.Trainer(
        max_epochs=350,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=datamodule)
    assert record.initial == pytest.approx(0.016 * 8 / 256)
    assert record.steps_per_run == 3 * 350  # 20 images in batches of 8: warm-up over 5 x 3 steps
    assert record.current == 0.0  # warm-up from 0, as build_learning_rate at global_step 0
    assert record.weight_decays == [0.0, 1e-5]


def test_autoaugment_v0_runs_its_zero_bit_posterize_as_tpu_does(tmp_path):
    import numpy as np
    from PIL import Image

    from datamodules.image_folder import ImageFolderDataModule

    cfg = compose_config("train", ["experiment=efficientnet_b0"], tmp_path)
    datamodule = ImageFolderDataModule(
        root=str(tmp_path),
        num_classes=2,
        image_size=32,
        augment=dict(cfg.data.augment),
        interpolation=cfg.data.interpolation,
    )
    transform = datamodule.transform(True)
    policy = next(t for t in transform.transforms if hasattr(t, "policy")).policy
    assert len(policy) == 25  # AutoAugment v0: 25 sub-policies
    posterize = next(op for sub in policy for op in sub if op.name == "Posterize" and op.magnitude == 2)
    assert posterize.level_fn(posterize.magnitude, posterize.hparams) == (0,)  # keep 0 bits: a black image
    image = Image.fromarray(np.full((40, 40, 3), 200, np.uint8))
    assert np.asarray(posterize.aug_fn(image, 0)).max() == 0
    for _ in range(200):  # every sub-policy runs without error
        assert transform(image).shape == (3, 32, 32)


def test_fgvc_randaugment_runs_its_zero_bit_posterize_as_tpu_does(tmp_path):
    """rand-m9-mstd0.5 (every FGVC recipe) draws magnitudes up to 10, where PosterizeIncreasing keeps
    4 - 4 * 10 / 10 = 0 bits: Pillow refuses that, so about 1 image in 400 stopped a training run."""
    import numpy as np
    from PIL import Image

    from datamodules.image_folder import ImageFolderDataModule

    cfg = compose_config("train", ["experiment=fgvc_inaturalist2019"], tmp_path)
    assert cfg.data.augment.auto_augment == "rand-m9-mstd0.5-inc1"
    datamodule = ImageFolderDataModule(root=str(tmp_path), num_classes=2, image_size=32, augment=dict(cfg.data.augment))
    transform = datamodule.transform(True)
    ops = next(t for t in transform.transforms if hasattr(t, "ops")).ops
    posterize = next(op for op in ops if op.name == "PosterizeIncreasing")
    assert posterize.level_fn(10, posterize.hparams) == (0,)  # the top of the range keeps 0 bits
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    assert np.asarray(posterize.aug_fn(image, 0)).max() == 0  # a black image, as the TPU code gives
    for _ in range(3000):  # without the fix, several of these raise "bits must be between ... 1 and 8"
        assert transform(image).shape == (3, 32, 32)
