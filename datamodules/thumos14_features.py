"""THUMOS'14 in the widely shared pre-extracted form: one two-stream feature array per video
(``<features_dir>/<video>.npy``, shape (T, D): the RGB half then the flow half, I3D-style) plus a
JSON annotation database::

    {"database": {"video_validation_0000051": {"subset": "Validation", "duration": 169.79,
      "fps": 30.0, "annotations": [{"label": "BaseballPitch", "segment": [67.5, 75.9],
      "label_id": 0}]}, ...}}

Snippet ``i`` starts at frame ``i * feat_stride`` (at the database's ``fps``) and spans
``num_frames`` frames, so its centre is at ``(i * feat_stride + num_frames / 2) / fps`` seconds."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, require_file

log = logging.getLogger(__name__)

THUMOS14_CLASSES = (
    "BaseballPitch", "BasketballDunk", "Billiards", "CleanAndJerk", "CliffDiving",
    "CricketBowling", "CricketShot", "Diving", "FrisbeeCatch", "GolfSwing", "HammerThrow",
    "HighJump", "JavelinThrow", "LongJump", "PoleVault", "Shotput", "SoccerPenalty",
    "TennisSwing", "ThrowDiscus", "VolleyballSpiking",
)  # fmt: skip
AMBIGUOUS = "Ambiguous"


def read_annotation_database(path: str | Path, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse and validate the JSON database; returns video -> {subset, duration, fps, segments
    (m, 2) seconds, labels (m,) class indices, ambiguous (k, 2)}."""
    path = require_file(path, "the JSON annotation database")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise DataFormatError(path, f"not valid JSON ({err.msg})", err.lineno) from err
    if not isinstance(data, dict) or not isinstance(data.get("database"), dict):
        raise DataFormatError(path, 'expected a top-level object with a "database" object')
    index = {name: i for i, name in enumerate(classes)}
    videos: dict[str, dict[str, Any]] = {}
    for video, entry in data["database"].items():
        where = f"database.{video}"
        for key in ("subset", "duration", "fps", "annotations"):
            if key not in entry:
                raise DataFormatError(path, f'{where} has no "{key}"')
        duration, fps = float(entry["duration"]), float(entry["fps"])
        if duration <= 0 or fps <= 0:
            raise DataFormatError(path, f"{where}: duration and fps must be positive")
        segments, labels, ambiguous = [], [], []
        for k, ann in enumerate(entry["annotations"]):
            try:
                label, (start, end) = ann["label"], (float(v) for v in ann["segment"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(
                    path, f'{where}.annotations[{k}] needs "label" and a 2-number "segment"'
                ) from err
            if not 0 <= start <= end:
                raise DataFormatError(
                    path, f"{where}.annotations[{k}]: segment [{start}, {end}] is not ordered"
                )
            if label == AMBIGUOUS:
                ambiguous.append((start, end))
                continue
            if label not in index:
                raise DataFormatError(path, f"{where}.annotations[{k}]: unknown label {label!r}")
            segments.append((start, end))
            labels.append(index[label])
        videos[video] = {
            "subset": str(entry["subset"]),
            "duration": duration,
            "fps": fps,
            "segments": np.asarray(segments, dtype=np.float64).reshape(-1, 2),
            "labels": np.asarray(labels, dtype=np.int64),
            "ambiguous": np.asarray(ambiguous, dtype=np.float64).reshape(-1, 2),
        }
    return videos


def annotation_database(
    videos: dict[str, dict[str, Any]], classes: Sequence[str], version: str
) -> dict:
    """The inverse of ``read_annotation_database``: a JSON-ready database."""
    database = {}
    for video, v in sorted(videos.items()):
        anns = [
            {"label": classes[int(c)], "segment": [float(s), float(e)], "label_id": int(c)}
            for (s, e), c in zip(v["segments"], v["labels"])
        ]
        anns += [
            {"label": AMBIGUOUS, "segment": [float(s), float(e)], "label_id": -1}
            for s, e in v["ambiguous"]
        ]
        database[video] = {
            "subset": v["subset"],
            "duration": v["duration"],
            "fps": v["fps"],
            "annotations": anns,
        }
    return {"version": version, "database": database}


class SnippetFeatureDataset(Dataset):
    """One item per video: its per-modality snippet features, ground truth, and time axis."""

    def __init__(
        self,
        features_dir: Path,
        videos: dict[str, dict[str, Any]],
        names: Sequence[str],
        video_ids: dict[str, int],
        modalities: Sequence[str],
        feature_dim: int,
        feat_stride: int,
        num_frames: int,
    ):
        self.features_dir = Path(features_dir)
        self.videos, self.names, self.video_ids = videos, list(names), video_ids
        self.modalities, self.feature_dim = list(modalities), feature_dim
        self.feat_stride, self.num_frames = feat_stride, num_frames
        missing = [n for n in self.names if not (self.features_dir / f"{n}.npy").exists()]
        if missing:
            raise FileNotFoundError(
                f"{self.features_dir / (missing[0] + '.npy')}: feature file missing "
                f"({len(missing)} of {len(self.names)} videos have none; run the extraction)"
            )

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict[str, Any]:
        name = self.names[i]
        path = self.features_dir / f"{name}.npy"
        try:
            array = np.load(path)
        except (ValueError, OSError, EOFError) as err:
            raise DataFormatError(path, f"cannot read feature array ({err})") from err
        expected = self.feature_dim * len(self.modalities)
        if array.ndim != 2 or array.shape[1] != expected or array.shape[0] == 0:
            raise DataFormatError(
                path,
                f"expected shape (T, {expected}) = {len(self.modalities)} modalities x "
                f"{self.feature_dim}, got {array.shape}",
            )
        v = self.videos[name]
        features = torch.from_numpy(np.ascontiguousarray(array.T, dtype=np.float32))
        return {
            "video": name,
            "video_id": self.video_ids[name],
            "features": {
                m: features[k * self.feature_dim : (k + 1) * self.feature_dim]
                for k, m in enumerate(self.modalities)
            },
            "segments": torch.as_tensor(v["segments"], dtype=torch.float32),
            "labels": torch.as_tensor(v["labels"], dtype=torch.long),
            "duration": v["duration"],
            # seconds of snippet 0's centre and between snippet centres
            "t0": self.num_frames / 2.0 / v["fps"],
            "dt": self.feat_stride / v["fps"],
        }


def collate_videos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad features to the longest video in the batch; a mask marks the real snippets."""
    length = max(next(iter(it["features"].values())).shape[1] for it in items)
    batch: dict[str, Any] = {"features": {}}
    for m in items[0]["features"]:
        padded = torch.zeros(len(items), items[0]["features"][m].shape[0], length)
        for b, it in enumerate(items):
            padded[b, :, : it["features"][m].shape[1]] = it["features"][m]
        batch["features"][m] = padded
    mask = torch.zeros(len(items), length, dtype=torch.bool)
    for b, it in enumerate(items):
        mask[b, : next(iter(it["features"].values())).shape[1]] = True
    batch["mask"] = mask
    for key in ("video", "segments", "labels"):
        batch[key] = [it[key] for it in items]
    for key in ("video_id", "duration", "t0", "dt"):
        batch[key] = torch.tensor(
            [it[key] for it in items], dtype=torch.float64 if key != "video_id" else torch.long
        )
    return batch


class Thumos14FeaturesDataModule(pl.LightningDataModule):
    """THUMOS'14 from pre-extracted two-stream features and the JSON database. As in the
    literature, the Validation subset trains and the Test subset evaluates (``val_subset`` is the
    subset the validation loop scores; the literature uses Test)."""

    def __init__(
        self,
        features_dir: str,
        annotation_file: str,
        feature_dim: int,
        num_classes: int = 20,
        classes: list[str] | None = None,
        modalities: Sequence[str] = ("rgb", "flow"),
        feat_stride: int = 4,
        num_frames: int = 16,
        train_subset: str = "Validation",
        val_subset: str = "Test",
        test_subset: str = "Test",
        batch_size: int = 4,
        num_workers: int = 0,
    ):
        super().__init__()
        self.classes = tuple(classes) if classes else THUMOS14_CLASSES
        if num_classes != len(self.classes):
            raise ValueError(f"num_classes={num_classes} but {len(self.classes)} classes are named")
        self.features_dir, self.annotation_file = Path(features_dir), Path(annotation_file)
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.modalities = list(modalities)
        self.feat_stride, self.num_frames = feat_stride, num_frames
        self.subsets = {"fit": train_subset, "validate": val_subset, "test": test_subset}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.videos: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, SnippetFeatureDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        self.videos = read_annotation_database(self.annotation_file, self.classes)
        self.video_ids = {name: i for i, name in enumerate(sorted(self.videos))}
        for key, subset in self.subsets.items():
            names = sorted(n for n, v in self.videos.items() if v["subset"] == subset)
            if not names:
                raise DataFormatError(self.annotation_file, f'no video has subset "{subset}"')
            self.datasets[key] = SnippetFeatureDataset(
                self.features_dir,
                self.videos,
                names,
                self.video_ids,
                self.modalities,
                self.feature_dim,
                self.feat_stride,
                self.num_frames,
            )

    def _loader(self, key: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[key],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_videos,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
