"""The classification task through the real configs, data readers and entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from core.training import evaluate, train
from tasks.classification.module import ImageClassificationTask
from tests.conftest import SMALL_DATA
from tests.helpers import read_metrics, read_wandb_run, run_entry

SHAPES = SMALL_DATA["shapes"]
DATA_CASES = {
    "shapes": SHAPES,
    "imagefolder": [
        "data=imagefolder",
        "data.num_classes=10",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=16",
        "data.generator=null",
    ],
    "cifar100": SMALL_DATA["cifar100"],
    "flowers102": SMALL_DATA["flowers102"],
}


@pytest.mark.parametrize("data", sorted(DATA_CASES))
def test_fast_dev_run_every_data_set(data, cfg_train, shared_data_dir, tmp_path):
    overrides = ["task=classification", "trainer=debug", "logger=csv", *DATA_CASES[data]]
    if data == "imagefolder":  # the generic reader over a folder-layout copy
        overrides.append(f"data.root={shared_data_dir / 'shapes_small'}")
        from functools import partial

        from core.data import ensure_generated
        from datamodules.synthetic.image_folder import write_image_folder

        ensure_generated(
            shared_data_dir / "shapes_small",
            partial(write_image_folder, train_per_class=12, val_per_class=4, test_per_class=4, image_size=32),
        )
    cfg = cfg_train(overrides)
    metrics = train(cfg)
    record = read_metrics(tmp_path / "run")
    assert record["monitor"]["metric"] == "val/acc_top1"
    assert (tmp_path / "run" / "config_resolved.yaml").exists()
    rows = (tmp_path / "run" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("index,target,predicted")
    assert len(rows) - 1 == cfg.data.batch_size  # fast_dev_run tests one batch: one row per image
    # the logged accuracy is the accuracy of the written predictions
    hits = [int(r.split(",")[1]) == int(r.split(",")[2]) for r in rows[1:]]
    assert metrics["test/acc_top1"] == pytest.approx(sum(hits) / len(hits), abs=1e-6)


def test_train_then_eval_same_metric(cfg_train, cfg_eval, tmp_path):
    run = tmp_path / "run"
    cfg = cfg_train([*SHAPES, "trainer.max_epochs=2", "logger=csv"], run_dir=run)
    metrics = train(cfg)
    best = read_metrics(run)["best_checkpoint"]
    assert best and Path(best).exists() and (run / "checkpoints" / "last.ckpt").exists()
    evaluated = evaluate(cfg_eval([*SHAPES, f"ckpt_path={best}"], run_dir=tmp_path / "eval"))
    assert evaluated["test/acc_top1"] == pytest.approx(metrics["test/acc_top1"], abs=1e-6)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["checkpoint"] == best


def test_checkpoint_loads_alone(cfg_train, tmp_path):
    cfg = cfg_train([*SHAPES, "trainer.max_epochs=1", "trainer.limit_train_batches=2"])
    train(cfg)
    task = ImageClassificationTask.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert task.hparams.backbone == cfg.task.backbone
    assert task.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_resume_from_last_checkpoint_continues_epochs(cfg_train, tmp_path):
    run = tmp_path / "run"
    base = [*SHAPES, "trainer.limit_train_batches=2", "test=false", "logger=none"]
    train(cfg_train([*base, "trainer.max_epochs=1"], run_dir=run))
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 1
    # Same run directory, no ckpt_path: resumes from checkpoints/last.ckpt automatically.
    train(cfg_train([*base, "trainer.max_epochs=2"], run_dir=run))
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert second["loops"]["fit_loop"]["epoch_progress"]["total"]["processed"] == 2
    assert second["global_step"] == 2 * first["global_step"]


def test_ckpt_path_last_requires_a_checkpoint(cfg_train):
    cfg = cfg_train([*SHAPES, "ckpt_path=last"])
    with pytest.raises(FileNotFoundError, match="last.ckpt does not exist"):
        train(cfg)


def test_wrong_number_of_classes_is_named(cfg_train):
    cfg = cfg_train([*SHAPES, "task.num_classes=7", "trainer=debug"])
    with pytest.raises(ValueError, match=r"task.num_classes=7 but the data.* 10 classes"):
        train(cfg)


def test_data_num_classes_checked_against_folders(cfg_train):
    cfg = cfg_train([*SHAPES, "trainer=debug", "data.num_classes=12", "data.generator.num_classes=10"])
    with pytest.raises(ValueError, match="has 10 classes but the config says data.num_classes=12"):
        train(cfg)


def test_unknown_config_key_is_rejected(cfg_train):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="task.learning_rate"):
        cfg_train(["task.learning_rate=0.1"])


def test_local_pretrained_weights_load_and_new_head_is_fresh(tmp_path, caplog):
    source = timm.create_model("tinynet_e", num_classes=5)
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.ckpt")
    task = ImageClassificationTask("tinynet_e", num_classes=10, image_size=32, pretrained_path=str(tmp_path / "w.ckpt"))
    stem_src, stem_dst = source.conv_stem.weight, task.model.conv_stem.weight
    assert torch.equal(stem_src, stem_dst)
    assert task.model.classifier.weight.shape == (10, source.num_features)
    assert "shape_mismatch" in caplog.text or "classifier" in caplog.text


def test_pretrained_weights_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ImageClassificationTask("tinynet_e", 10, 32, pretrained_path=str(tmp_path / "nope.pth"))


def test_wandb_offline_run_holds_metrics(cfg_train, tmp_path):
    cfg = cfg_train([*SHAPES, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=wandb", "test=false"])
    metrics = train(cfg)
    import wandb

    wandb.teardown()  # train() finished the run; stopping W&B's service flushes its file to disk
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "W&B offline run file missing"
    history, config = read_wandb_run(runs[0])
    assert "val/acc_top1" in history, sorted(history)
    assert history["val/acc_top1"][-1] == pytest.approx(metrics["val/acc_top1"])
    assert "train/loss_epoch" in history
    assert "tinynet_e" in json.dumps(config) and "label_smoothing" in json.dumps(config)
    images = list(runs[0].parent.glob("files/media/images/val/samples_*.png"))
    assert images, "sample images were not logged"


def test_hydra_cli_help_and_cfg():
    out = run_entry("train.py", ["--cfg", "job", "task=classification", "data=cifar100"]).stdout
    assert "Cifar100DataModule" in out and "num_classes: ${data.num_classes}" in out
    help_text = run_entry("train.py", ["--help"]).stdout
    assert "== Configuration groups ==" in help_text and "classification" in help_text
