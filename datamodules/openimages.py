"""Open Images V5 detection, read from the published files (datamodules/openimages_files.py):

    <root>/class-descriptions-boxable.csv, bbox_labels_600_hierarchy.json,
    <root>/<split>-annotations-bbox.csv, <split>-annotations-human-imagelabels-boxable.csv,
    <root>/<split>/<ImageID>.jpg            split in train, validation, test

or the Challenge 2019 files under their own names (challenge-2019-classes-description-500.csv,
challenge-2019-label500-hierarchy.json, challenge-2019-<split>-detection-bbox.csv,
challenge-2019-<split>-detection-human-imagelabels.csv; train and validation only); the release read is
the one whose class list is in ``root`` (datamodules/openimages_files.py lists both).

A split's images are those named by its box or image-label file. Each sample carries the boxes as
annotated (training targets), the same boxes expanded over the hierarchy and the expanded verified
classes (what the challenge metric scores against). ``skip_corrupt`` skips and counts malformed box
rows and unreadable images instead of failing.

The instance-segmentation variant (:class:`OpenImagesSegmentationDataModule`) also reads
``<root>/<split>-annotations-object-segmentation.csv`` and the mask PNGs in ``<root>/<split>-masks/``
(datamodules/openimages_masks.py) and gives each instance its mask; the challenge's segmentation track
is read under its names (challenge-2019-classes-description-segmentable.csv,
challenge-2019-label300-segmentable-hierarchy.json, challenge-2019-<split>-segmentation-bbox.csv,
-segmentation-labels.csv, -segmentation-masks.csv, masks in challenge-2019-<split>-masks/)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from core.data import DataFormatError, ensure_generated, require_file
from core.images import decode_image, positive_size
from datamodules.openimages_files import (
    CHALLENGE_2019_DETECTION_FILES,
    CHALLENGE_2019_SEGMENTATION_FILES,
    V5_DETECTION_FILES,
    Hierarchy,
    ImageBoxes,
    expand_image_labels,
    find_release,
    read_boxes,
    read_class_descriptions,
    read_image_labels,
)
from datamodules.openimages_masks import InstanceMask, load_mask, read_segmentations

log = logging.getLogger(__name__)

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
            image = decode_image(path, what="an Open Images JPEG named by the split's annotation files")
        except (DataFormatError, FileNotFoundError) as err:
            if not rec["skip_corrupt"]:
                raise
            log.warning("skipping corrupt sample: %s", err)
            self.skipped += 1
            return None
        original_size = image.size
        image = image.resize(self.image_size, Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        w, h = self.image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = torch.as_tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        eval_boxes = torch.as_tensor(rec["eval_boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        flipped = self.train and torch.rand(1).item() < 0.5  # horizontal flip
        if flipped:
            pixels = pixels.flip(-1)
            boxes = flip_boxes(boxes, w)
        return {
            "flipped": flipped,  # subclasses flip what they add (relationship boxes, masks) alike
            "image": pixels,
            "image_id": index,
            "image_name": rec["image_id"],
            "original_size": original_size,  # (width, height) of the JPEG: submissions are at this size
            "boxes": boxes,
            "labels": torch.as_tensor(rec["labels"], dtype=torch.int64),
            "group_of": torch.as_tensor(rec["group_of"], dtype=torch.bool),
            "eval_boxes": eval_boxes,
            "eval_labels": torch.as_tensor(rec["eval_labels"], dtype=torch.int64),
            "eval_group_of": torch.as_tensor(rec["eval_group_of"], dtype=torch.bool),
            "verified": torch.as_tensor(rec["verified"], dtype=torch.int64),
        }


def flip_boxes(boxes: torch.Tensor, width: float) -> torch.Tensor:
    """Boxes (n, 4: x1 y1 x2 y2, pixels) of an image of ``width`` mirrored left-right."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)


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
        self.image_size = positive_size(image_size, count=2)
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

    # The releases read, each under its own file names (datamodules/openimages_files.py); the first whose
    # class list is in ``root`` is the one read.
    releases = (V5_DETECTION_FILES, CHALLENGE_2019_DETECTION_FILES)

    def file(self, key: str, split: str = "") -> Path:
        """The path of one annotation file of the release found in ``root`` (``key`` of its table)."""
        return self.root / find_release(self.root, list(self.releases))[key].format(split=split)

    def read_classes(self) -> Hierarchy:
        """Class list and hierarchy; sets ``class_names``, ``display_names``, ``class_ancestors``."""
        ensure_generated(self.root, self.generator)
        classes = read_class_descriptions(self.file("classes"))
        hierarchy = Hierarchy.read(self.file("hierarchy"))
        if len(classes) != self.expected_classes:
            raise DataFormatError(
                self.file("classes"),
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
            records = self.split_records(split, hierarchy, index)
            if records is not None:
                self._datasets[key] = self.dataset_class(self.root, split, records, self.image_size, key == "train")

    dataset_class = OpenImagesDetectionDataset

    def read_split_boxes(self, split: str) -> dict[str, ImageBoxes] | None:
        """The split's boxes as annotated (None without a box file); subclasses add instances here."""
        box_file = self.file("boxes", split)
        if not box_file.exists():
            return None
        boxes, skipped = read_boxes(box_file, skip_corrupt=self.skip_corrupt, image_folder=self.root / split)
        self._skipped_rows += skipped
        return boxes

    def split_records(self, split: str, hierarchy: Hierarchy, index: dict[str, int]) -> list[dict] | None:
        """One record per image of the split: the boxes as annotated (training targets), the same
        boxes expanded over the hierarchy (``eval_*``; ``eval_source`` = the annotated box each copies)
        and the expanded verified classes. None when the split has no box file."""
        box_file = self.file("boxes", split)
        label_file = self.file("image_labels", split)
        boxes = self.read_split_boxes(split)
        if boxes is None:
            return None
        labels = read_image_labels(label_file, self.root / split) if label_file.exists() else {}
        verified = expand_image_labels(labels, hierarchy)
        records = []
        for image_id in sorted(set(boxes) | set(labels)):
            raw = boxes.get(image_id, ImageBoxes())
            for name in raw.labels:
                if name not in index:
                    raise DataFormatError(
                        box_file, f"class {name!r} of image {image_id} is not in {self.file('classes').name}"
                    )
            # each box copied to every ancestor in the label map (expand_boxes, keeping the source)
            source = [j for j, name in enumerate(raw.labels) for a in hierarchy.expand_labels(name) if a in index]
            expanded = [index[a] for name in raw.labels for a in hierarchy.expand_labels(name) if a in index]
            records.append(
                {
                    "image_id": image_id,
                    "skip_corrupt": self.skip_corrupt,
                    "boxes": raw.boxes,
                    "labels": [index[n] for n in raw.labels],
                    "group_of": raw.group_of,
                    "eval_boxes": [raw.boxes[j] for j in source],
                    "eval_labels": expanded,
                    "eval_group_of": [raw.group_of[j] for j in source],
                    "eval_source": source,
                    "verified": sorted(index[n] for n in verified.get(image_id, ()) if n in index),
                }
            )
        return records

    def _loader(self, key: str, shuffle: bool) -> DataLoader:
        if key not in self._datasets:
            raise FileNotFoundError(f"{self.root}: no {self.file('boxes', SPLITS[key]).name} for the {key} split")
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


# ----------------------------------------------------------------------------- instance segmentation

MASK_MATCH_TOLERANCE = 1e-5  # normalized; the official evaluator merges boxes and masks on equal coordinates


def attach_masks(
    boxes: ImageBoxes, masks: list[InstanceMask], csv_path: Path, index: dict[str, int]
) -> tuple[ImageBoxes, list[Path | None]]:
    """One image's instances: its annotated boxes, each with the mask whose class and box coordinates
    equal its own (the official evaluator's merge of the box and mask files), then the masks that
    match no box as instances of their own. Returns the instances and a mask path per instance (None
    for a box without a mask: every group-of box, and boxes nobody segmented)."""
    merged = ImageBoxes(list(boxes.labels), list(boxes.boxes), list(boxes.group_of))
    paths: list[Path | None] = [None] * len(merged.labels)
    for mask in masks:
        if mask.label not in index:
            raise DataFormatError(csv_path, f"class {mask.label!r} of image {mask.image_id} is not in the class list")
        for j, (label, box, group) in enumerate(zip(merged.labels, merged.boxes, merged.group_of)):
            same_box = max(abs(a - b) for a, b in zip(box, mask.box)) <= MASK_MATCH_TOLERANCE
            if label == mask.label and not group and paths[j] is None and same_box:
                paths[j] = mask.mask_path
                break
        else:
            merged.labels.append(mask.label)
            merged.boxes.append(tuple(mask.box))
            merged.group_of.append(False)
            paths.append(mask.mask_path)
    return merged, paths


class OpenImagesSegmentationDataset(OpenImagesDetectionDataset):
    """The detection samples plus, per instance, its mask at the network's input size (``masks``
    (m, H, W) bool, aligned with ``boxes``; all False where ``has_mask`` is False) and, outside
    training, the expanded ground truth's masks at the JPEG's own size (``eval_masks``, aligned with
    ``eval_boxes``), which is where the challenge scores them."""

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = super().__getitem__(index)
        if item is None:
            return None
        rec = self.records[index]
        try:
            sizes = [self.image_size] if self.train else [self.image_size, tuple(item["original_size"])]
            masks, *full = self._load(rec["mask_paths"], sizes)
            if full:
                full = full[0]
                item["eval_masks"] = full[rec["eval_source"]] if rec["eval_source"] else full[:0]
        except (DataFormatError, FileNotFoundError) as err:
            if not rec["skip_corrupt"]:
                raise
            warnings.warn(f"skipping image {rec['image_id']}: {err}", stacklevel=2)
            self.skipped += 1
            return None
        item["masks"] = masks.flip(-1) if item["flipped"] else masks
        item["has_mask"] = torch.tensor([p is not None for p in rec["mask_paths"]], dtype=torch.bool)
        return item

    @staticmethod
    def _load(paths: list[Path | None], sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Per size (width, height): the instances' masks (m, h, w) bool, each PNG decoded once."""
        outs = [torch.zeros(len(paths), h, w, dtype=torch.bool) for w, h in sizes]
        for j, path in enumerate(paths):
            if path is None:
                continue
            native = Image.fromarray(load_mask(path).astype(np.uint8) * 255)
            for out, size in zip(outs, sizes):
                resized = native if native.size == tuple(size) else native.resize(tuple(size), Image.NEAREST)
                out[j] = torch.from_numpy(np.asarray(resized) > 0)
        return outs


class OpenImagesSegmentationDataModule(OpenImagesDetectionDataModule):
    """The Open Images V5 box files plus the instance-segmentation files of each split,

        <root>/<split>-annotations-object-segmentation.csv, <root>/<split>-masks/<MaskPath>

    (datamodules/openimages_masks.py). Instances are the annotated boxes, each with the mask of
    equal class and box when there is one, plus masks with no such box; group-of boxes have no mask.
    ``skip_corrupt`` also skips and counts malformed segmentation rows and unreadable mask PNGs."""

    dataset_class = OpenImagesSegmentationDataset
    releases = (V5_DETECTION_FILES, CHALLENGE_2019_SEGMENTATION_FILES)

    def read_split_boxes(self, split: str) -> dict[str, ImageBoxes] | None:
        boxes = super().read_split_boxes(split)
        if boxes is None:
            return None
        csv_path = require_file(self.file("segmentations", split), "the Open Images segmentation file")
        masks, skipped = read_segmentations(
            csv_path, self.file("masks_dir", split), skip_corrupt=self.skip_corrupt, image_folder=self.root / split
        )
        self._skipped_rows += skipped
        index = {n: i for i, n in enumerate(self.class_names)}
        self._mask_paths = {}
        for image_id in sorted(set(boxes) | set(masks)):
            boxes[image_id], self._mask_paths[image_id] = attach_masks(
                boxes.get(image_id, ImageBoxes()), masks.get(image_id, []), csv_path, index
            )
        return boxes

    def split_records(self, split: str, hierarchy: Hierarchy, index: dict[str, int]) -> list[dict] | None:
        records = super().split_records(split, hierarchy, index)
        for rec in records or ():
            rec["mask_paths"] = self._mask_paths.get(rec["image_id"], [])
        return records
