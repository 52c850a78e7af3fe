"""The people-depth task end to end through the real configs: train, test, video, checkpoint, eval."""

from __future__ import annotations

import json

import pytest
import torch

from core.training import evaluate, train
from core.video import open_video
from tasks.people_depth.model import hourglass, network_inputs
from tasks.people_depth.module import VIDEO_NAME, PeopleDepthTask

TINY = [
    "task=people_depth", "data=mannequin_challenge", "logger=csv",
    "data.root=${paths.data_dir}/mannequin_challenge_tiny", "data.image_size=[48,64]", "data.batch_size=4",
    "data.generator.train_clips=2", "data.generator.validation_clips=1", "data.generator.test_clips=1",
    "data.generator.frames_per_clip=4", "data.generator.width=64", "data.generator.height=48",
    "task.widths=[8,16,32]", "task.video_frames=4",
]


@pytest.mark.parametrize("inputs", ["full", "rgb"])
def test_fast_dev_run_writes_metrics_and_defocus_video(inputs, cfg_train, tmp_path):
    metrics = train(cfg_train([*TINY, "trainer=debug", f"task.inputs={inputs}"]))
    for region in ("full", "env", "hum", "intra", "inter"):
        assert 0.0 <= metrics[f"test/si_{region}"] < 5.0
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["monitor"] == {"metric": "val/si_full", "mode": "min"}
    reader = open_video(tmp_path / "run" / VIDEO_NAME)
    assert len(reader) == 4 and reader[0].shape == (48, 3 * 64, 3)


def test_train_then_eval_from_checkpoint_gives_the_same_metric(cfg_train, cfg_eval, tmp_path, shared_data_dir):
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    metrics = train(cfg_train(overrides, run_dir=run))
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists()
    task = PeopleDepthTask.load_from_checkpoint(last, map_location="cpu")
    assert task.hparams.inputs == "full" and list(task.hparams.widths) == [8, 16, 32]
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    evaluated = evaluate(cfg_eval([o for o in overrides if "trainer" not in o] + [f"ckpt_path={best}"],
                                  run_dir=tmp_path / "eval"))
    assert evaluated["test/si_hum"] == pytest.approx(metrics["test/si_hum"], abs=1e-5)
    # The defocus command on the same checkpoint and data.
    from tasks.people_depth.defocus import main as defocus_main

    out = tmp_path / "bokeh.mp4"
    defocus_main(["--checkpoint", str(last), "--root", str(shared_data_dir / "mannequin_challenge_tiny"),
                  "--aperture", "4", "--out", str(out)])
    reader = open_video(out)
    assert len(reader) == 4 and reader[0].shape == (48, 3 * 64, 3)


@pytest.mark.parametrize("inputs, channels", [("full", 6), ("rgb", 3)])
def test_tiny_network_forward_backward_reaches_every_parameter(inputs, channels):
    model = hourglass(inputs, widths=(4, 8, 16))
    batch = {"image": torch.rand(2, 3, 20, 28), "human_mask": (torch.rand(2, 1, 20, 28) > 0.8).float(),
             "parallax_depth": torch.rand(2, 1, 20, 28) + 1, "confidence": torch.rand(2, 1, 20, 28)}
    x = network_inputs(batch, inputs)
    assert x.shape[1] == channels
    out = model(x)
    assert out.shape == (2, 1, 20, 28)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_full_inputs_see_only_relative_parallax_depth():
    batch = {"image": torch.rand(1, 3, 8, 8), "human_mask": torch.zeros(1, 1, 8, 8),
             "parallax_depth": torch.rand(1, 1, 8, 8) + 1, "confidence": torch.rand(1, 1, 8, 8)}
    scaled = dict(batch, parallax_depth=batch["parallax_depth"] * 17.0)
    torch.testing.assert_close(network_inputs(batch, "full"), network_inputs(scaled, "full"))


@pytest.mark.parametrize("experiment", ["people_depth_mc", "people_depth_single_frame"])
def test_experiment_configs_compose(experiment, cfg_train):
    cfg = cfg_train([f"experiment={experiment}"])
    assert cfg.task._target_.endswith("PeopleDepthTask") and cfg.data._target_.endswith("MannequinChallengeDataModule")
    assert cfg.task.inputs == ("rgb" if "single" in experiment else "full")


@pytest.mark.slow  # W&B's offline run start-up takes tens of seconds on a busy machine
def test_side_by_side_video_is_logged_to_wandb(cfg_train, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    # not trainer=debug: fast_dev_run swaps every logger for a dummy
    train(cfg_train([*TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "logger=wandb"]))
    videos = list((tmp_path / "run").glob("wandb/offline-run-*/files/media/videos/test/side_by_side_*.mp4"))
    assert len(videos) == 1 and (tmp_path / "run" / VIDEO_NAME).exists()
