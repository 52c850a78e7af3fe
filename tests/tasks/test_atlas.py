"""A small activation atlas end to end: train a classifier with the atlas callback, then build an
atlas from its checkpoint with the atlas command's config, through the real shapes reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.training import train
from tasks.atlas.run import build_atlas
from tests.conftest import SMALL_DATA, compose_config
from tests.helpers import read_metrics, run_entry

SMALL_SHAPES = SMALL_DATA["shapes"]
SMALL_ATLAS = [
    "layer=blocks.3",
    "grid_size=4",
    "min_count=2",
    "umap.n_neighbors=8",
    "featurevis.icon_size=16",
    "featurevis.steps=2",
    "featurevis.batch_size=8",
    "featurevis.transforms=standard",
    "class_atlases=[0,square_0]",
    "class_grid_size=3",
    "class_min_count=1",
    "class_top_n=20",
    "class_attempts=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")


def check_atlas_folder(folder: Path, num_images: int) -> dict:
    summary = json.loads((folder / "layout.json").read_text())
    layout = np.load(folder / "layout.npz")
    assert summary["num_activations"] == num_images == len(layout["coords"])
    assert 0 <= layout["coords"].min() and layout["coords"].max() <= 1
    cells = layout["cells"]
    assert len(cells) == summary["num_cells"] == len(layout["icons"]) > 0
    assert (layout["counts"] >= 2).all() and layout["counts"].sum() <= num_images
    assert [c["count"] for c in summary["cells"]] == layout["counts"].tolist()
    atlas = Image.open(folder / "atlas.png")
    assert atlas.size == (4 * 16, 4 * 16)
    pixels = np.asarray(atlas)
    row, col = cells[0]
    assert np.array_equal(pixels[row * 16 : (row + 1) * 16, col * 16 : (col + 1) * 16], layout["icons"][0])
    assert set(summary["class_atlases"]) == {"circle_0", "square_0"}
    labels = layout["labels"]
    assert summary["whitened"] and layout["whitening"].shape == (summary["channels"],) * 2
    built = 0
    for entry in summary["class_atlases"].values():
        c = entry["class"]
        if "skipped" in entry:  # a barely trained network: too few samples attribute to the class
            attributions = np.load(folder / "activations" / "attributions.npy")
            assert entry["skipped"].startswith(f"class {c}: only ") and f"class_{c}_indices" not in layout
            assert int(((attributions[:, c] > 0) | (attributions.argmax(1) == c)).sum()) < 3
            continue
        built += 1
        assert Image.open(folder / entry["png"]).size == (3 * 16, 3 * 16)
        indices = layout[f"class_{c}_indices"]
        assert len(indices) == entry["num_samples"] and len(layout[f"class_{c}_coords"]) == len(indices)
        assert entry["base_rate"] == pytest.approx(float((labels == c).mean()))
        assert entry["enrichment"] == pytest.approx(entry["purity"] / entry["base_rate"])
        assert len(layout[f"class_{c}_icons"]) == len(entry["cells"]) == len(layout[f"class_{c}_cells"])
    assert summary["knn_chance"] == pytest.approx(np.bincount(labels).max() / len(labels))
    assert 0 <= summary["knn_accuracy"] <= 1
    summary["built_class_atlases"] = built
    return summary


@pytest.mark.slow
def test_atlas_command_on_a_timm_model(shared_data_dir, tmp_path):
    cfg = compose_config(
        "atlas",
        [
            *SMALL_SHAPES,
            "model.backbone=test_efficientnet",
            "atlas.num_samples=80",
            *[f"atlas.{o}" for o in SMALL_ATLAS],
            "atlas.featurevis.steps=1",
        ],
        tmp_path / "out",
        shared_data_dir,
    )
    summary = build_atlas(cfg)
    checked = check_atlas_folder(tmp_path / "out", num_images=80)
    assert checked.pop("built_class_atlases") == 2
    assert summary == checked
    # a second run finds the finished collection and reuses it: its arrays are not written again
    collected = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.npy")}
    assert collected, "no collected activation arrays"
    again = build_atlas(cfg)
    assert again["cells"] == summary["cells"]
    assert {p: p.stat().st_mtime_ns for p in collected} == collected


@pytest.mark.slow
def test_atlas_callback_after_training_then_atlas_command_on_the_checkpoint(cfg_train, shared_data_dir, tmp_path):
    run = tmp_path / "run"
    cfg = cfg_train(
        [
            *SMALL_SHAPES,
            "trainer.max_epochs=1",
            "logger=csv",
            "test=false",
            "callbacks=[model_checkpoint,atlas]",
            *[f"callbacks.atlas.atlas.{o}" for o in SMALL_ATLAS],
        ],
        run_dir=run,
    )
    train(cfg)
    check_atlas_folder(run / "atlas", num_images=120)

    last = read_metrics(run)["last_checkpoint"]
    out = tmp_path / "atlas_run"
    atlas_cfg = compose_config(
        "atlas",
        [*SMALL_SHAPES, f"ckpt_path={last}", "atlas.num_samples=100", *[f"atlas.{o}" for o in SMALL_ATLAS]],
        out,
        shared_data_dir,
    )
    summary = build_atlas(atlas_cfg)
    checked = check_atlas_folder(out, num_images=100)
    checked.pop("built_class_atlases")
    assert summary == checked
    assert (out / "activations" / "progress.json").exists()


def test_atlas_command_refuses_an_unknown_layer(shared_data_dir, tmp_path):
    cfg = compose_config(
        "atlas",
        [*SMALL_SHAPES, "model.backbone=test_efficientnet", "atlas.layer=blocks.42"],
        tmp_path / "out",
        shared_data_dir,
    )
    with pytest.raises(KeyError, match="nearest names"):
        build_atlas(cfg)


@pytest.mark.slow
def test_atlas_entry_point_with_a_timm_model_and_local_weights_to_wandb(shared_data_dir, tmp_path):
    import timm

    weights = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), weights)
    run_entry(
        "atlas.py",
        [
            *SMALL_SHAPES,
            f"paths.data_dir={shared_data_dir}",
            f"paths.log_dir={tmp_path}/logs",
            "run_id=entry",
            "model.backbone=test_efficientnet",
            f"model.weights_path={weights}",
            "logger=wandb",
            *[f"atlas.{o}" for o in SMALL_ATLAS],
        ],
    )
    folder = tmp_path / "logs" / "atlas-shapes" / "runs" / "entry"
    check_atlas_folder(folder, num_images=120)
    media = list((folder / "wandb").rglob("*.png"))
    assert len(media) >= 4, media  # atlas, layout scatter, two class atlases
