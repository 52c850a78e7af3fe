"""An Open Images detection run with the W&B logger (offline): its detection pictures land in the
offline run's media, beside the challenge mAP in its history."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.training import train
from tests.helpers import read_wandb_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_detection_pictures_go_to_the_offline_wandb_run(cfg_train, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = cfg_train(
        [
            "experiment=openimages_detection",
            f"data.root={tmp_path / 'oi'}",
            "data.generator.num_train=4",
            "data.generator.num_val=3",
            "data.generator.num_test=2",
            "data.batch_size=4",
            "task.num_sample_images=2",
            # not trainer=debug: fast_dev_run swaps every logger for a dummy
            "trainer.max_epochs=1",
            "logger=wandb",
            "callbacks.rich_progress_bar=null",
        ]
    )
    metrics = train(cfg)
    import wandb

    wandb.teardown()  # train() finished the run; stopping W&B's service flushes its file to disk
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "W&B offline run file missing"
    history, _ = read_wandb_run(runs[0])
    assert history["val/map"][-1] == pytest.approx(metrics["val/map"])
    media = runs[0].parent / "files" / "media" / "images"
    val_images = sorted((tmp_path / "oi" / "validation").glob("*.jpg"))
    for stage in ("val", "test"):
        pictures = sorted(media.glob(f"{stage}/detections_*.png"))
        steps = sorted({int(p.name.split("_")[1]) for p in pictures})
        # the sanity check's and the epoch's validation, the test: num_sample_images pictures each
        assert len(steps) == (2 if stage == "val" else 1), [p.name for p in pictures]
        last = [p for p in pictures if int(p.name.split("_")[1]) == steps[-1]]
        assert len(last) == 2
        if stage != "val":
            continue
        # the first two validation images, each shown (boxes, if any, drawn over it)
        shown = []
        for picture in last:
            with Image.open(picture) as image:
                pixels = np.asarray(image.convert("RGB")).astype(int)
            assert pixels.shape == (120, 160, 3)
            for index, path in enumerate(val_images[:2]):
                with Image.open(path) as image:
                    original = np.asarray(image.convert("RGB")).astype(int)
                if (np.abs(pixels - original) <= 1).all(-1).mean() > 0.8:
                    shown.append(index)
        assert sorted(shown) == [0, 1]
