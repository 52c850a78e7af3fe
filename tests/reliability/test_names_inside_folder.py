"""Names read from data files stay inside their folder (issue 14): THUMOS'14 annotation video
names and feature-database keys that climb out with ``..`` or are absolute are refused with the
file and line, before anything is read or written there."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.data import DataFormatError, resolve_inside
from datamodules.thumos14 import SPLITS, prepare_features
from datamodules.thumos14_extract import SnippetFeatureExtractor
from datamodules.thumos14_features import Thumos14FeaturesDataModule

CLASSES = ("BaseballPitch",)


def write_thumos_annotations(root: Path, bad_name: str) -> Path:
    """The published annotation layout of one class (+ Ambiguous) per split; line 2 of the
    validation BaseballPitch file names ``bad_name``. Returns that file."""
    for video_folder, folder, suffix, _ in SPLITS.values():
        (root / video_folder).mkdir(parents=True, exist_ok=True)
        (root / folder).mkdir(parents=True, exist_ok=True)
        for label in (*CLASSES, "Ambiguous"):
            (root / folder / f"{label}_{suffix}.txt").write_text("")
    (root / SPLITS["validation"][0] / "video_validation_0000001.mp4").write_bytes(b"placeholder")
    bad = root / SPLITS["validation"][1] / "BaseballPitch_val.txt"
    bad.write_text(f"video_validation_0000001 1.0 2.0\n{bad_name} 3.0 4.5\n")
    return bad


@pytest.mark.parametrize("escape", ["../../outside/video_x", "ABSOLUTE"])
def test_thumos_annotation_video_name_outside_videos_folder_is_refused(tmp_path, escape):
    root = tmp_path / "thumos14"
    target = tmp_path / "outside" / "video_x"
    target.parent.mkdir()
    target.with_suffix(".mp4").write_bytes(b"not read")  # exists: only the name check stops it
    name = str(target) if escape == "ABSOLUTE" else escape
    bad = write_thumos_annotations(root, name)
    extractor = SnippetFeatureExtractor(backbone="test_resnet")
    features = root / "features"
    with pytest.raises(DataFormatError) as err:
        prepare_features(root, features, extractor, CLASSES)
    message = str(err.value)
    assert message.startswith(f"{bad}:2: name {name!r}")
    assert "refused" in message
    assert not list(tmp_path.glob("outside/*.npy"))  # nothing written beside the target


def write_feature_database(folder: Path, names: list[str]) -> Path:
    annotations = folder / "annotations" / "thumos14.json"
    annotations.parent.mkdir(parents=True)
    database = {
        name: {
            "subset": subset,
            "duration": 10.0,
            "fps": 10.0,
            "annotations": [{"label": "BaseballPitch", "segment": [1.0, 2.0], "label_id": 0}],
        }
        for name, subset in zip(names, ["Validation", "Validation", "Test"])
    }
    annotations.write_text(json.dumps({"version": "test", "database": database}, indent=2))
    return annotations


def test_feature_database_key_outside_features_folder_is_refused(tmp_path):
    features = tmp_path / "i3d_features"
    features.mkdir()
    (tmp_path / "secret.npy").parent.mkdir(exist_ok=True)
    np.save(tmp_path / "secret.npy", np.zeros((4, 2), np.float32))
    annotations = write_feature_database(tmp_path, ["video_validation_1", "../secret", "video_test_1"])
    line = next(i for i, t in enumerate(annotations.read_text().splitlines(), 1) if '"../secret"' in t)
    dm = Thumos14FeaturesDataModule(
        str(features), str(annotations), feature_dim=1, num_classes=1, class_names=list(CLASSES)
    )
    with pytest.raises(DataFormatError, match=rf"^{annotations}:{line}: name '\.\./secret' steps out of"):
        dm.setup("fit")


def test_symlink_that_leaves_the_folder_is_refused(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "escape").symlink_to(tmp_path)
    listing = tmp_path / "list.txt"
    with pytest.raises(DataFormatError, match=rf"^{listing}:7: name 'escape/x' resolves outside"):
        resolve_inside(folder, "escape/x", listing, 7, ".png")
    assert resolve_inside(folder, "clip_1/frame_0001", listing, 8, ".png") == folder / "clip_1/frame_0001.png"
