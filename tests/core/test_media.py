"""core.media: one call logs images, videos and tables to W&B (offline), TensorBoard, CSV, or nothing."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger, WandbLogger

from core.media import log_image, log_table, log_video
from tests.helpers import read_wandb_run


def _frames(t: int = 6, size: int = 32) -> torch.Tensor:
    """A (T, 3, H, W) clip in [0, 1]: a bright square moving right."""
    video = torch.zeros(t, 3, size, size)
    for i in range(t):
        video[i, :, 8:16, 2 + 4 * i : 10 + 4 * i] = 1.0
    return video


def _log_everything(loggers) -> None:
    images = torch.rand(3, 3, 16, 16)
    log_image(loggers, "val/samples", images, captions=["a", "b", "c"], step=5)
    log_video(loggers, "test/clip", _frames(), fps=4, step=5)
    log_table(loggers, "test/per_class", ["class", "ap"], [["run", 0.5], ["jump", None]], step=5)


def test_no_logger_logs_nothing_and_does_not_fail():
    _log_everything([])
    _log_everything(None)


def test_csv_logger_gets_files(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    _log_everything([logger])
    media = tmp_path / "csv" / "media"
    pngs = sorted((media / "val" / "samples").glob("*.png"))
    assert [p.name for p in pngs] == ["step0000005_0.png", "step0000005_1.png", "step0000005_2.png"]
    from PIL import Image

    assert Image.open(pngs[0]).size == (16, 16)
    assert (media / "val" / "samples" / "step0000005_captions.txt").read_text() == "a\nb\nc\n"
    assert (media / "test" / "clip" / "step0000005_0.mp4").stat().st_size > 0
    rows = list(csv.reader((media / "test" / "per_class" / "step0000005_0.csv").open()))
    assert rows == [["class", "ap"], ["run", "0.5"], ["jump", ""]]


def test_tensorboard_logger_gets_image_grid_video_frames_and_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    _log_everything([logger])
    logger.experiment.flush()
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"val/samples", "test/clip"}
    grid = events.Images("val/samples")[0]
    assert (grid.step, grid.width, grid.height) == (5, 48, 16)  # 3 images side by side
    frames = events.Images("test/clip")[0]
    assert (frames.width, frames.height) == (6 * 32, 32)  # 6 frames, fewer than the 8 shown
    text = events.Tensors("test/per_class/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| class | ap |" in text and "| jump |  |" in text


def test_wandb_offline_run_gets_image_video_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="media-test", id="media1")
    try:
        _log_everything([logger])
    finally:
        import wandb

        wandb.finish()
        wandb.teardown()  # stopping W&B's service flushes the run file to disk
    run_dir = next((tmp_path / "wandb").glob("offline-run-*-media1"))
    history, _ = read_wandb_run(run_dir / "run-media1.wandb")
    # media values are nested records: read back as "<key>/<field>"
    assert history["val/samples/_type"] == ["images/separated"]
    assert history["val/samples/count"] == [3]
    assert history["val/samples/captions"] == [["a", "b", "c"]]
    assert history["test/clip/_type"] == ["videos"]
    assert history["test/per_class/_type"] == ["table-file"]
    assert history["trainer/global_step"] == [5, 5, 5]
    files = run_dir / "files"
    assert len(list((files / "media" / "images" / "val").glob("samples_*.png"))) == 3
    assert len(list((files / "media" / "videos" / "test").glob("clip_*.mp4"))) == 1
    table = json.loads((files / history["test/per_class/path"][0]).read_text())
    assert table["columns"] == ["class", "ap"] and table["data"] == [["run", 0.5], ["jump", None]]


def test_mismatched_captions_name_the_key(tmp_path):
    logger = CSVLogger(tmp_path, name="x")
    with pytest.raises(ValueError, match=r"log_image\('val/x'\): 2 images but 1 captions"):
        log_image([logger], "val/x", np.zeros((2, 8, 8, 3), np.uint8), captions=["only one"])
