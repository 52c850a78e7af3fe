"""Open Images V5 detection, read from the published files (datamodules/openimages_files.py):

    <root>/class-descriptions-boxable.csv, bbox_labels_600_hierarchy.json,
    <root>/<split>-annotations-bbox.csv, <split>-annotations-human-imagelabels-boxable.csv,
    <root>/<split>/<ImageID>.jpg            split in train, validation, test

A split's images are those named by its box or image-label file. Each sample carries the boxes as
annotated (training targets), the same boxes expanded over the hierarchy and the expanded verified
classes (what the challenge metric scores against). ``skip_corrupt`` skips and counts malformed box
rows and unreadable images instead of failing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated, require_file
from datamodules.openimages_files import (
    Hierarchy,
    ImageBoxes,
    expand_boxes,
    expand_image_labels,
    read_boxes,
    read_class_descriptions,
    read_image_labels,
)

SPLITS = {"train": "train", "val": "validation", "test": "test"}


class OpenImagesDetectionDataset(Dataset):
    """Images of one split with their targets in pixels of the resized image (width, height)."""

    def __init__(self, root: Path, split: str, records: list[dict], image_size: tuple[int, int], train: bool):
        self.root, self.split, self.records = root, split, records
        self.image_size = image_size
        self.train = train
        self.skipped = 0

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        rec = self.records[index]
        path = self.root / self.split / f"{rec['image_id']}.jpg"
        try:
            with Image.open(require_file(path, "an Open Images JPEG")) as image:
                image = image.convert("RGB").resize(self.image_size, Image.BILINEAR)
        except (OSError, FileNotFoundError) as err:
            if not rec["skip_corrupt"]:
                raise DataFormatError(path, f"unreadable image ({err})") from None
            self.skipped += 1
            return None
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        w, h = self.image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = torch.as_tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        eval_boxes = torch.as_tensor(rec["eval_boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        if self.train and torch.rand(1).item() < 0.5:  # horizontal flip
            pixels = pixels.flip(-1)
            boxes = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        return {
            "image": pixels,
            "image_id": index,
            "image_name": rec["image_id"],
            "boxes": boxes,
            "labels": torch.as_tensor(rec["labels"], dtype=torch.int64),
            "group_of": torch.as_tensor(rec["group_of"], dtype=torch.bool),
            "eval_boxes": eval_boxes,
            "eval_labels": torch.as_tensor(rec["eval_labels"], dtype=torch.int64),
            "eval_group_of": torch.as_tensor(rec["eval_group_of"], dtype=torch.bool),
            "verified": torch.as_tensor(rec["verified"], dtype=torch.int64),
        }


def collate_detection(items: list[dict | None]) -> list[dict]:
    """Detection batches stay lists (images of one size, varying box counts); skipped items dropped."""
    return [item for item in items if item is not None]


class OpenImagesDetectionDataModule(pl.LightningDataModule):
    """The Open Images V5 box files as a detection data set (class ids in class-descriptions order)."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        image_size: list[int] = (160, 120),
        batch_size: int = 8,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        generator: Callable[[Path], object] | None = None,
    ):
        super().__init__()
        self.root = Path(root)
        self.expected_classes = int(num_classes)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.skip_corrupt = skip_corrupt
        self.generator = generator
        self.class_names: list[str] = []
        self.display_names: list[str] = []
        self.class_ancestors: list[list[int]] = []
        self._datasets: dict[str, OpenImagesDetectionDataset] = {}
        self._skipped_rows = 0

    @property
    def skipped_samples(self) -> int:
        return self._skipped_rows + sum(d.skipped for d in self._datasets.values())

    @property
    def num_classes(self) -> int:
        return self.expected_classes

    def prepare_data(self) -> None:
        ensure_generated(self.root, self.generator)

    def read_classes(self) -> Hierarchy:
        """Class list and hierarchy; sets ``class_names``, ``display_names``, ``class_ancestors``."""
        ensure_generated(self.root, self.generator)
        classes = read_class_descriptions(self.root / "class-descriptions-boxable.csv")
        hierarchy = Hierarchy.read(self.root / "bbox_labels_600_hierarchy.json")
        if len(classes) != self.expected_classes:
            raise DataFormatError(
                self.root / "class-descriptions-boxable.csv",
                f"{len(classes)} classes, but data.num_classes={self.expected_classes}",
            )
        self.class_names, self.display_names = list(classes), list(classes.values())
        index = {n: i for i, n in enumerate(self.class_names)}
        self.class_ancestors = [
            sorted(index[a] for a in hierarchy.ancestors.get(n, ()) if a in index) for n in self.class_names
        ]
        return hierarchy

    def setup(self, stage: str | None = None) -> None:
        hierarchy = self.read_classes()
        index = {n: i for i, n in enumerate(self.class_names)}
        for key, split in SPLITS.items():
            if key in self._datasets:
                continue
            box_file = self.root / f"{split}-annotations-bbox.csv"
            label_file = self.root / f"{split}-annotations-human-imagelabels-boxable.csv"
            if not box_file.exists():
                continue
            boxes, skipped = read_boxes(box_file, skip_corrupt=self.skip_corrupt)
            self._skipped_rows += skipped
            labels = read_image_labels(label_file) if label_file.exists() else {}
            expanded = expand_boxes(boxes, hierarchy)
            verified = expand_image_labels(labels, hierarchy)
            records = []
            for image_id in sorted(set(boxes) | set(labels)):
                raw, exp = boxes.get(image_id, ImageBoxes()), expanded.get(image_id, ImageBoxes())
                for name in raw.labels:
                    if name not in index:
                        raise DataFormatError(
                            box_file, f"class {name!r} of image {image_id} is not in class-descriptions-boxable.csv"
                        )
                keep = [n in index for n in exp.labels]
                records.append(
                    {
                        "image_id": image_id,
                        "skip_corrupt": self.skip_corrupt,
                        "boxes": raw.boxes,
                        "labels": [index[n] for n in raw.labels],
                        "group_of": raw.group_of,
                        "eval_boxes": [b for b, k in zip(exp.boxes, keep) if k],
                        "eval_labels": [index[n] for n in exp.labels if n in index],
                        "eval_group_of": [g for g, k in zip(exp.group_of, keep) if k],
                        "verified": sorted(index[n] for n in verified.get(image_id, ()) if n in index),
                    }
                )
            self._datasets[key] = OpenImagesDetectionDataset(self.root, split, records, self.image_size, key == "train")

    def _loader(self, key: str, shuffle: bool) -> DataLoader:
        if key not in self._datasets:
            raise FileNotFoundError(f"{self.root}: no {SPLITS[key]}-annotations-bbox.csv for the {key} split")
        return DataLoader(
            self._datasets[key],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            collate_fn=collate_detection,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
