"""The people-depth task end to end through the real configs: Table 2's three models, train, test,
video, checkpoint, eval; the public hourglass and its checkpoint key names."""

from __future__ import annotations

import json

import pytest
import torch

from core.training import evaluate, train
from core.video import open_video
from tasks.people_depth.model import (
    INPUT_CHANNELS,
    hourglass_depth_net,
    network_inputs,
    public_module_names,
    unet_depth_net,
)
from tasks.people_depth.module import METRIC_NAMES, PeopleDepthTask
from tasks.people_depth.video import VIDEO_NAME
from tests.conftest import SMALL_DATA

pytestmark = pytest.mark.usefixtures("one_thread")

# the shared small copy (its root keyed on the generator's arguments by tests/conftest.py)
TINY = [
    "task=people_depth",
    *SMALL_DATA["mannequin_challenge"],
    "logger=csv",
    "task.width=0.125",
    "task.video_frames=4",
]


@pytest.mark.parametrize("model", ["I", "IDCM", "IDCMK"])
def test_each_table2_experiment_runs_and_writes_metrics_and_video(model, cfg_train, tmp_path):
    overrides = [
        *TINY,
        f"experiment=people_depth_{model}",
        "data.image_size=[48,64]",
        "data.batch_size=4",
        "task.width=0.125",
        "trainer=debug",
    ]
    metrics = train(cfg_train(overrides))
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for name in METRIC_NAMES:  # every error measured (an untrained net is never exact) and written
        assert metrics[f"test/{name}"] > 0.0 and record["metrics"][f"test/{name}"] == metrics[f"test/{name}"], name
    assert record["monitor"] == {"metric": "val/si_full", "mode": "min"}
    reader = open_video(tmp_path / "run" / VIDEO_NAME)
    assert len(reader) == 4 and reader[0].shape == (48, 3 * 64, 3)


def test_train_then_eval_from_checkpoint_gives_the_same_metric(cfg_train, cfg_eval, tmp_path):
    run = tmp_path / "run"
    overrides = [*TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=2"]
    cfg = cfg_train(overrides, run_dir=run)
    metrics = train(cfg)
    last = run / "checkpoints" / "last.ckpt"
    assert last.exists()
    task = PeopleDepthTask.load_from_checkpoint(last, map_location="cpu")
    assert task.hparams.inputs == "IDCM" and task.hparams.width == 0.125
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    evaluated = evaluate(
        cfg_eval([o for o in overrides if "trainer" not in o] + [f"ckpt_path={best}"], run_dir=tmp_path / "eval")
    )
    for name in ("si_full", "si_hum", "rmse", "rel"):
        assert evaluated[f"test/{name}"] == pytest.approx(metrics[f"test/{name}"], abs=1e-5)
    # The video command on the same checkpoint and data.
    from tasks.people_depth.render_video import main as video_main

    out = tmp_path / "bokeh.mp4"
    video_main(
        [
            "--checkpoint",
            str(last),
            "--root",
            str(cfg.data.root),
            "--aperture",
            "4",
            "--out",
            str(out),
        ]
    )
    reader = open_video(out)
    assert len(reader) == 4 and reader[0].shape == (48, 3 * 64, 3)


def _batch(h=20, w=28, keypoints=True):
    batch = {
        "image": torch.rand(2, 3, h, w),
        "human_mask": (torch.rand(2, 1, h, w) > 0.8).float(),
        "input_log_depth": torch.randn(2, 1, h, w),
        "confidence": torch.rand(2, 1, h, w),
    }
    if keypoints:
        batch["keypoints"] = torch.randint(0, 19, (2, 1, h, w)).float() / 18
    return batch


@pytest.mark.parametrize("inputs", list(INPUT_CHANNELS))
def test_tiny_hourglass_forward_backward_reaches_every_parameter(inputs):
    model = hourglass_depth_net(inputs, width=0.0625)
    x = network_inputs(_batch(), inputs)
    assert x.shape[1] == INPUT_CHANNELS[inputs]
    depth, confidence = model.forward_with_confidence(x)  # sizes not a multiple of 16: padded and cropped
    assert depth.shape == confidence.shape == (2, 1, 20, 28) and torch.equal(depth, model(x))
    (depth.square().mean() + confidence.mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    # Every weight learns; the biases of convolutions followed by batch norm get an exact zero
    # gradient in training mode (the norm removes them), as in the public network.
    dead = [n for n, p in model.named_parameters() if p.ndim > 1 and p.grad.abs().sum() == 0]
    assert not dead


def test_unet_option_forward_backward():
    model = unet_depth_net("IDCM", widths=(4, 8, 16))
    out = model(network_inputs(_batch(), "IDCM"))
    assert out.shape == (2, 1, 20, 28)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_input_channels_follow_the_public_order():
    batch = _batch(8, 8)
    x = network_inputs(batch, "IDCMK")
    for channel, key in ((3, "human_mask"), (4, "keypoints"), (5, "input_log_depth"), (6, "confidence")):
        assert torch.equal(x[:, channel], batch[key][:, 0]), key
    assert torch.equal(network_inputs(batch, "IDCM")[:, 4], batch["input_log_depth"][:, 0])
    assert torch.equal(network_inputs(batch, "I"), batch["image"])
    with pytest.raises(KeyError, match="data.keypoints=true"):
        network_inputs(_batch(8, 8, keypoints=False), "IDCMK")


# Public key names and shapes read off google/mannequinchallenge models/hourglass.py (HourglassModel:
# seq = [Conv 7x7, BatchNorm, ReLU, Channels4]; ChannelsN.list = [lower or skip path, the other];
# an inception's convs.<b> = [Conv 1x1, BN, ReLU(, Conv kxk, BN, ReLU)]), for the IDCMK model (7 inputs).
PUBLIC_KEYS = {
    "seq.0.weight": (128, 7, 7, 7),
    "seq.1.weight": (128,),
    "seq.1.running_mean": (128,),
    "seq.3.list.1.0.convs.3.3.weight": (16, 64, 11, 11),  # Channels4 skip: inception A, 11x11 branch
    "seq.3.list.0.1.convs.0.0.weight": (32, 128, 1, 1),  # Channels4 lower path, first B
    "seq.3.list.0.5.convs.2.3.weight": (16, 32, 7, 7),  # Channels4 lower path, last (H), 7x7 branch
    "seq.3.list.0.3.list.0.2.convs.0.0.weight": (64, 128, 1, 1),  # Channels3 lower, D
    "seq.3.list.0.3.list.1.1.convs.1.3.weight": (32, 64, 3, 3),  # Channels3 skip, C
    "seq.3.list.0.3.list.0.3.list.1.5.convs.3.3.weight": (64, 64, 11, 11),  # Channels2 lower, last F
    "seq.3.list.0.3.list.0.3.list.1.3.list.1.3.convs.2.3.weight": (64, 32, 5, 5),  # Channels1 lower, 3rd E
    "seq.3.list.0.3.list.0.3.list.1.3.list.0.1.convs.0.1.running_var": (64,),  # Channels1 skip, BN
    "pred_layer.weight": (1, 64, 3, 3),
    "uncertainty_layer.0.bias": (1,),
}
# 22 inception blocks of 4 branches: 5 keys (conv w, b; BN mean, var, count) for the 1x1 branch, 10
# for each other -> 35 each; stem 2 + 7 (affine BN); heads 4.
PUBLIC_KEY_COUNT = 22 * 35 + 2 + 5 + 4


def _as_public(state: dict) -> dict:
    """Our state dict under the public names, as the public code's DataParallel saves it."""
    ours_to_public = {ours: public for public, ours in public_module_names().items()}
    out = {}
    for key, value in state.items():
        for ours in sorted(ours_to_public, key=len, reverse=True):
            if key.startswith(ours + "."):
                key = ours_to_public[ours] + key[len(ours) :]
                break
        out["module." + key] = value
    return out


def test_public_checkpoint_key_names_load_through_pretrained_path(tmp_path):
    torch.manual_seed(0)
    source = hourglass_depth_net("IDCMK", width=1.0)
    for module in source.modules():  # non-trivial running statistics, so the BN buffers matter
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    public = _as_public(source.state_dict())
    names = {k[len("module.") :]: tuple(v.shape) for k, v in public.items()}
    assert len(names) == PUBLIC_KEY_COUNT
    for key, shape in PUBLIC_KEYS.items():
        assert names.get(key) == shape, key
    path = tmp_path / "best_depth_Ours_Bilinear_inc_7_net_G.pth"
    torch.save(public, path)
    task = PeopleDepthTask(inputs="IDCMK", width=1.0, pretrained_path=str(path)).eval()
    x = network_inputs(_batch(32, 48), "IDCMK")
    with torch.no_grad():
        torch.testing.assert_close(task.model(x), source.eval()(x))


def test_public_checkpoint_of_another_input_set_is_refused(tmp_path):
    path = tmp_path / "inc_3.pth"
    torch.save(_as_public(hourglass_depth_net("I", width=0.125).state_dict()), path)
    with pytest.raises(ValueError, match="shapes differ"):
        PeopleDepthTask(inputs="IDCM", width=0.125, pretrained_path=str(path))


@pytest.mark.parametrize("model", ["I", "IDCM", "IDCMK"])
def test_experiment_configs_compose(model, cfg_train):
    cfg = cfg_train([f"experiment=people_depth_{model}"])
    assert cfg.task._target_.endswith("PeopleDepthTask") and cfg.data._target_.endswith("MannequinChallengeDataModule")
    assert cfg.task.inputs == model and cfg.task.network == "hourglass" and cfg.task.width == 1.0
    assert cfg.data.keypoints == (model == "IDCMK")
    # the public recipe through core.optim: Adam at lr 4e-4, halved every 8 epochs
    task = PeopleDepthTask(**{k: v for k, v in cfg.task.items() if k != "_target_"} | {"width": 0.125})
    configured = task.configure_optimizers()
    optimizer, schedule = configured["optimizer"], configured["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.Adam) and schedule["interval"] == "epoch"
    lrs = []
    for _ in range(17):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule["scheduler"].step()
    assert lrs[0] == lrs[7] == pytest.approx(4e-4) and lrs[8] == lrs[15] == pytest.approx(2e-4)
    assert lrs[16] == pytest.approx(1e-4)


@pytest.mark.slow  # W&B's offline run start-up takes tens of seconds on a busy machine
def test_side_by_side_video_is_logged_to_wandb(cfg_train, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    # not trainer=debug: fast_dev_run swaps every logger for a dummy
    train(cfg_train([*TINY, "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "logger=wandb"]))
    videos = list((tmp_path / "run").glob("wandb/offline-run-*/files/media/videos/test/side_by_side_*.mp4"))
    assert len(videos) == 1 and (tmp_path / "run" / VIDEO_NAME).exists()


def test_table2_files_hold_the_mean_over_seeds_with_the_best_in_bold():
    from tasks.people_depth.table2 import COLUMNS, table_rows, to_csv, to_markdown

    def run(value):
        return {key: value for _, key in COLUMNS}

    rows = table_rows({"I": [run(0.5), run(0.3)], "IDCM": [run(0.2), run(0.2)]})
    assert rows == [["I", *[0.4] * 7], ["IDCM", *[0.2] * 7]]
    lines = to_csv(rows).splitlines()
    assert lines[0] == "model,si-full,si-env,si-hum,si-intra,si-inter,RMSE,Rel" and lines[2].startswith("IDCM,0.2,")
    markdown = to_markdown(rows).splitlines()
    assert markdown[2] == "| I | " + " | ".join(["0.4000"] * 7) + " |"
    assert markdown[3] == "| IDCM | " + " | ".join(["**0.2000**"] * 7) + " |"
