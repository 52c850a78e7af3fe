"""THUMOS'14 in the widely shared pre-extracted form: one two-stream feature array per video
(``<features_dir>/<video>.npy``, shape (T, D): the RGB half then the flow half, I3D-style) plus a
JSON annotation database::

    {"database": {"video_validation_0000051": {"subset": "Validation", "duration": 169.79,
      "fps": 30.0, "annotations": [{"label": "BaseballPitch", "segment": [67.5, 75.9],
      "label_id": 0}]}, ...}}

Snippet ``i`` starts at frame ``i * feat_stride`` (at the database's ``fps``) and spans
``num_frames`` frames, so its centre is at ``(i * feat_stride + num_frames / 2) / fps`` seconds."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, line_of_key, resolve_inside
from datamodules.thumos14_annotations import (  # re-exported: the published formats
    PUBLISHED_VIDEOS,
    THUMOS14_CLASSES,
    SegmentFix,
    describe_defect,
    read_annotation_database,
    refuse_segment_fixes,
    segment_fix_report,
)

log = logging.getLogger(__name__)


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
                m: features[k * self.feature_dim : (k + 1) * self.feature_dim] for k, m in enumerate(self.modalities)
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
        batch[key] = torch.tensor([it[key] for it in items], dtype=torch.float64 if key != "video_id" else torch.long)
    return batch


def held_out_videos(names: Sequence[str], fraction: float, seed: int) -> list[str]:
    """A seeded, by-video hold-out: ``round(fraction * len(names))`` of ``names`` (at least one
    when ``fraction > 0`` and at least two videos exist), the same on every machine and rank."""
    names = sorted(names)
    count = round(fraction * len(names))
    if fraction > 0 and len(names) >= 2:
        count = min(max(count, 1), len(names) - 1)
    order = np.random.default_rng(seed).permutation(len(names))
    return sorted(names[i] for i in order[:count])


class TestSelectionError(ValueError):
    """The validation loop (which checkpoints and early stopping select on) would score the test
    split."""


class Thumos14FeaturesDataModule(pl.LightningDataModule):
    """THUMOS'14 from pre-extracted two-stream features and the JSON database. The Validation
    subset trains and the Test subset is scored once, at the end. Model selection (checkpoint,
    early stopping) uses ``val_fraction`` of the training videos, held out by video with
    ``split_seed``; ``val_subset`` names another subset instead, and naming the test subset there
    is refused unless ``allow_test_selection`` is true (numbers selected on the test split are
    biased upward). A segment that ends past its video's ``duration`` is clipped to it, one that
    lies at or after the end dropped; each is logged once and counted in ``data_report`` (and so
    in metrics.json). ``strict_annotations`` refuses, instead, any segment dropped or clipped by
    more than ``annotation_tolerance`` seconds."""

    def __init__(
        self,
        features_dir: str,
        annotation_file: str,
        feature_dim: int,
        num_classes: int = 20,
        class_names: list[str] | None = None,
        modalities: Sequence[str] = ("rgb", "flow"),
        feat_stride: int = 4,
        num_frames: int = 16,
        train_subset: str = "Validation",
        val_subset: str | None = None,
        test_subset: str = "Test",
        batch_size: int = 4,
        num_workers: int = 0,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        allow_test_selection: bool = False,
        strict_annotations: bool = False,
        annotation_tolerance: float = 1.0,
    ):
        super().__init__()
        if val_subset is not None and val_subset == test_subset and not allow_test_selection:
            raise TestSelectionError(
                f"data.val_subset={val_subset!r} is the test subset: checkpoints and early "
                "stopping would be selected on the test split. Leave data.val_subset=null to "
                f"hold out data.val_fraction of the {train_subset!r} videos for selection, or set "
                "data.allow_test_selection=true to do it anyway (the test numbers are then biased)"
            )
        if val_subset is None and not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.val_fraction, self.split_seed = float(val_fraction), int(split_seed)
        self.class_names = tuple(class_names) if class_names else THUMOS14_CLASSES
        if num_classes != len(self.class_names):
            raise ValueError(f"num_classes={num_classes} but {len(self.class_names)} classes are named")
        self.features_dir, self.annotation_file = Path(features_dir), Path(annotation_file)
        self.feature_dim, self.num_classes = feature_dim, num_classes
        self.modalities = list(modalities)
        self.feat_stride, self.num_frames = feat_stride, num_frames
        self.subsets = {"fit": train_subset, "validate": val_subset, "test": test_subset}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.strict_annotations, self.annotation_tolerance = bool(strict_annotations), float(annotation_tolerance)
        self.videos: dict[str, dict[str, Any]] = {}
        self.datasets: dict[str, SnippetFeatureDataset] = {}
        self.segment_fixes: list[SegmentFix] = []
        self.earlier_report = segment_fix_report([])  # fixes found before setup (the raw form's extraction)

    @property
    def data_report(self) -> dict[str, Any]:
        """What the run reports about its data (core.training writes it into metrics.json): the
        segments clipped to, or dropped at, their video's end."""
        report = segment_fix_report(self.segment_fixes)
        return {key: self.earlier_report[key] + value for key, value in report.items()}

    def read_videos(self) -> dict[str, dict[str, Any]]:
        """The database with every segment fitted into its video; each change is logged once."""
        fixes: list[SegmentFix] = []
        videos = read_annotation_database(self.annotation_file, self.class_names, fixes)
        if self.strict_annotations:
            refuse_segment_fixes(fixes, self.annotation_tolerance)
        if fixes and not self.segment_fixes:
            log.warning("%d annotated segments do not fit inside their video:", len(fixes))
            for fix in fixes:
                log.warning("  %s", fix.describe())
        self.segment_fixes = fixes
        return videos

    def download_inventory(self):
        """For ``python -m datamodules.check``: the feature array of every database video, the
        videos per subset against the official counts, and the segments past their video's end."""
        from datamodules.check import DownloadInventory, ReferencedFile

        fixes: list[SegmentFix] = []
        videos = read_annotation_database(self.annotation_file, self.class_names, fixes)
        arrays = {}
        for name in videos:
            line = line_of_key(self.annotation_file, name)
            path = resolve_inside(self.features_dir, name, self.annotation_file, line, ".npy")
            arrays[path] = ReferencedFile(path, f"{self.annotation_file}:{line}: database.{name}")
        counts = {
            f"{subset} videos": (sum(v["subset"] == subset for v in videos.values()), published)
            for subset, published in PUBLISHED_VIDEOS.items()
        }
        width = self.feature_dim * len(self.modalities)

        def review(facts: dict[Path, dict[str, Any]]) -> tuple[list[str], list[str]]:
            problems = [
                f"{path}: shape {facts[path]['shape']}, expected (T, {width}) = {len(self.modalities)} streams x "
                f"{self.feature_dim} (referenced by {ref.referenced_by})"
                for path, ref in arrays.items()
                if path in facts and (len(facts[path]["shape"]) != 2 or facts[path]["shape"][1] != width)
            ]
            return problems, []

        defects = [describe_defect(fix, self.annotation_file) for fix in fixes]
        return DownloadInventory(files=list(arrays.values()), counts=counts, defects=defects, review=review)

    def setup(self, stage: str | None = None) -> None:
        self.videos = self.read_videos()
        for name in self.videos:  # a database key names a file inside features_dir, nothing else
            resolve_inside(
                self.features_dir, name, self.annotation_file, line_of_key(self.annotation_file, name), ".npy"
            )
        self.video_ids = {name: i for i, name in enumerate(sorted(self.videos))}
        splits = {}
        for key, subset in self.subsets.items():
            if subset is None:
                continue
            names = sorted(n for n, v in self.videos.items() if v["subset"] == subset)
            if not names:
                raise DataFormatError(self.annotation_file, f'no video has subset "{subset}"')
            splits[key] = names
        if self.subsets["validate"] is None:  # by-video hold-out of the training subset
            held = held_out_videos(splits["fit"], self.val_fraction, self.split_seed)
            splits["validate"] = held
            splits["fit"] = [n for n in splits["fit"] if n not in set(held)]
        self.splits = splits
        # what the files hold, for core.guards.DataContractCheck: class count and width per stream
        first = self.features_dir / f"{splits['fit'][0]}.npy"
        width = np.load(first, mmap_mode="r").shape[-1] if first.exists() else None
        self.data_facts = {"num_classes": len(self.class_names), "source": str(self.annotation_file)}
        if width is not None and width % len(self.modalities) == 0:
            self.data_facts["feature_dim"] = width // len(self.modalities)
            self.data_facts["feature_dim_source"] = f"{first} has {width} columns for {len(self.modalities)} streams"
        for key, names in splits.items():
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
