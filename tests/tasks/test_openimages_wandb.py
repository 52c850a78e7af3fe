"""Open Images runs with the W&B logger (offline), one per track: the pictures (images with predicted
boxes, masks or triplets drawn) land in the offline run's media, beside the track's metric in its
history."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.training import train
from tests.helpers import read_wandb_run

pytestmark = pytest.mark.usefixtures("one_thread")

# experiment -> (the pictures' key below val/ and test/, the monitored metric, generator sizes)
TRACKS = {
    "openimages_detection": ("detections", "val/map", (4, 3, 2)),
    "openimages_segmentation": ("segmentations", "val/map", (4, 3, 2)),
    # about half of the generated images hold a relationship: more images for two in each split
    "openimages_relationship": ("relationships", "val/score", (8, 8, 8)),
}


@pytest.mark.parametrize("experiment", sorted(TRACKS))
def test_pictures_go_to_the_offline_wandb_run(experiment, cfg_train, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    key, monitor, (train_n, val_n, test_n) = TRACKS[experiment]
    cfg = cfg_train(
        [
            f"experiment={experiment}",
            f"data.root={tmp_path / 'oi'}",
            f"data.generator.num_train={train_n}",
            f"data.generator.num_val={val_n}",
            f"data.generator.num_test={test_n}",
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
    assert history[monitor][-1] == pytest.approx(metrics[monitor])
    media = runs[0].parent / "files" / "media" / "images"
    originals = []
    for path in sorted((tmp_path / "oi" / "validation").glob("*.jpg")):
        with Image.open(path) as image:
            originals.append(np.asarray(image.convert("RGB")).astype(int))
    for stage in ("val", "test"):
        pictures = sorted(media.glob(f"{stage}/{key}_*.png"))
        steps = sorted({int(p.name.split("_")[1]) for p in pictures})
        assert steps, sorted(p.relative_to(media) for p in media.rglob("*.png"))
        last = [p for p in pictures if int(p.name.split("_")[1]) == steps[-1]]
        assert len(last) == 2  # num_sample_images of the stage's last logging step
        if stage != "val":
            continue
        # each shows a different validation image (whatever is drawn over it covers little of it)
        shown = set()
        for picture in last:
            with Image.open(picture) as image:
                pixels = np.asarray(image.convert("RGB")).astype(int)
            assert pixels.shape == (120, 160, 3)
            shown |= {i for i, o in enumerate(originals) if (np.abs(pixels - o) <= 1).all(-1).mean() > 0.6}
        assert len(shown) == 2
