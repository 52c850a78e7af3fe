"""Guards every task gets from core.training (issue 14): a NaN loss stops the run naming the step
and the sample; the task's class count and feature width are checked against the data files at
start-up. Built on a THUMOS'14 pre-extracted-feature data set written here (JSON database + .npy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.guards import DataContractError, NonFiniteLossError
from core.training import train
from datamodules.thumos14_features import THUMOS14_CLASSES, held_out_videos

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTH = 8  # features per stream


def write_features(root: Path, nan_video: str | None = None) -> list[str]:
    """8 Validation and 3 Test videos of 48 snippets, 2 streams of WIDTH features each."""
    rng = np.random.default_rng(0)
    features, database = root / "features", {}
    features.mkdir(parents=True)
    names = [f"video_validation_{i:07d}" for i in range(8)] + [f"video_test_{i:07d}" for i in range(3)]
    for k, name in enumerate(names):
        array = rng.normal(size=(48, 2 * WIDTH)).astype(np.float32)
        if name == nan_video:
            array[10:12, :WIDTH] = np.nan  # a few corrupt RGB snippets
        np.save(features / f"{name}.npy", array)
        label = THUMOS14_CLASSES[k % 20]
        database[name] = {
            "subset": "Validation" if "validation" in name else "Test",
            "duration": 19.2,
            "fps": 10.0,
            "annotations": [{"label": label, "segment": [4.0, 10.0], "label_id": k % 20}],
        }
    (root / "thumos14.json").write_text(json.dumps({"version": "test", "database": database}))
    return names


def overrides(root: Path, *extra: str) -> list[str]:
    return [
        "task=talnet",
        "data=thumos14_features",
        f"data.features_dir={root / 'features'}",
        f"data.annotation_file={root / 'thumos14.json'}",
        f"data.feature_dim={WIDTH}",
        "data.batch_size=8",
        "task.hidden_dim=8",
        "task.classifier_hidden=16",
        "task.anchor_scales=[4,8,16]",
        "trainer.max_epochs=1",
        "trainer.num_sanity_val_steps=0",
        "logger=none",
        "test=false",
        *extra,
    ]


def test_nan_features_stop_the_run_naming_step_and_video(tmp_path, cfg_train):
    names = write_features(tmp_path)
    validation = [n for n in names if "validation" in n]
    trained = sorted(set(validation) - set(held_out_videos(validation, 0.2, 0)))
    bad = trained[1]
    (tmp_path / "features").rename(tmp_path / "clean")
    write_features(tmp_path, nan_video=bad)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg_train(overrides(tmp_path), run_dir=run))
    assert str(err.value) == (
        "training loss is nan at global step 0 (epoch 0, batch 0); non-finite input values in "
        f"batch['features']['rgb'] of sample {bad}. The run stopped; the last good checkpoint is kept."
    )
    assert not (run / "metrics.json").exists()  # no finished run with train/loss NaN


def test_class_count_and_feature_width_checked_against_the_data(tmp_path, cfg_train):
    write_features(tmp_path)
    database = tmp_path / "thumos14.json"
    with pytest.raises(DataContractError) as err:
        train(cfg_train(overrides(tmp_path, "task.num_classes=7"), run_dir=tmp_path / "run7"))
    assert str(err.value) == (
        f"task.num_classes=7 but the data set has 20 classes ({database}); set "
        "task.num_classes=${data.num_classes} or fix data.num_classes"
    )
    first = tmp_path / "features" / "video_validation_0000000.npy"
    with pytest.raises(DataContractError) as err:
        train(cfg_train(overrides(tmp_path, "data.feature_dim=16"), run_dir=tmp_path / "run16"))
    assert str(err.value) == (
        f"task.feature_dim=16 but the data set has 8 features per stream ({first} has 16 columns for 2 "
        "streams); set task.feature_dim=${data.feature_dim} or fix data.feature_dim"
    )
