"""`python train.py` with no arguments: the Quick start's main job."""

from __future__ import annotations

import pytest

from tests.helpers import read_metrics, run_entry


@pytest.mark.slow
def test_default_run_trains_far_above_chance(tmp_path):
    run_entry(
        "train.py",
        [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}", "run_id=default"],
        timeout=1200,
    )
    (run_dir,) = (tmp_path / "logs").glob("classification-shapes/runs/default")
    metrics = read_metrics(run_dir)["metrics"]
    chance = 1 / 10
    assert metrics["val/acc_top1"] >= 6 * chance  # about 0.88 measured
    assert metrics["test/acc_top1"] >= 6 * chance
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "predictions.csv").exists()


def test_ema_callback_averages_weights(cfg_train, small_data, tmp_path):
    import torch

    cfg = cfg_train(
        [
            *small_data("shapes"),
            "callbacks=[model_checkpoint,ema]",
            "callbacks.ema.decay=0.5",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=3",
            "test=false",
            "logger=none",
        ]
    )
    from core.training import train

    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    # The checkpoint's weights are the average; the raw weights are kept beside them.
    key = "model.conv_stem.weight"
    assert key in state["current_model_state"]
    assert not torch.equal(state["state_dict"][key], state["current_model_state"][key])
