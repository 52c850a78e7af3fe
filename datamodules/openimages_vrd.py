"""Open Images V5 visual relationships (the relationship track of Challenge 2019) as a DataModule:
the detection files of datamodules/openimages.py plus each split's relationship file, read by
datamodules/openimages_relationships.py::

    <root>/{train,validation,test}-annotations-vrd.csv    ImageID,LabelName1,LabelName2,XMin1,...,
                                                           RelationshipLabel (normalized boxes); or the
                                                           challenge's challenge-2019-{train,validation}-vrd.csv
                                                           (+ -vrd-labels.csv), with its detection files
    <root>/challenge-2019-relationships-description.csv   the relationship names (their order = ids;
                                                           without it, the training file's, sorted)
    <root>/challenge-2019-classes-vrd.csv                 the track's object classes (optional)
    <root>/challenge-2019-attributes-description.csv      the attributes ("is" objects; optional:
                                                           ``num_attributes`` 0 without it)

A split's images are those of its relationship file (the track scores those only). Each sample is
the detection sample (image, boxes, labels, ...) plus its relationships in pixels of the resized
image: ``subject_boxes``, ``object_boxes`` (n, 4), ``subject_labels``, ``object_labels`` (n,) entity
ids, ``relationships`` (n,) relationship ids, and ``image_labels`` (k,) entity ids of the image's
human-verified labels (present or absent; what the challenge's evaluator limits scoring to).

Entity ids (the scoring CLI's class ids): the track's classes (challenge-2019-classes-vrd.csv order;
without that file every detection class) followed by the attributes; ``entity_names`` lists them,
``entity_classes`` gives each one's detection class id (-1 for an attribute), ``relationship_names``
the relationships. Image-level labels of classes outside the entities are dropped, as the CLI does.
A relationship naming an unknown class, attribute or relationship is a DataFormatError naming the
file (skipped and counted with ``skip_corrupt``); so is an image of a relationship file that has no
box or label row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from core.data import DataFormatError
from datamodules.openimages import SPLITS, OpenImagesDetectionDataModule, OpenImagesDetectionDataset, flip_boxes
from datamodules.openimages_files import Hierarchy, read_class_descriptions, read_image_labels
from datamodules.openimages_relationships import CHALLENGE_VRD_FILES, read_relationships, vrd_files

RELATIONSHIP_KEYS = ("subject_boxes", "object_boxes", "subject_labels", "object_labels", "relationships")


class OpenImagesRelationshipDataset(OpenImagesDetectionDataset):
    """The detection sample of an image plus its relationships (pixels of the resized image, flipped
    with the image in training)."""

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        item = super().__getitem__(index)
        if item is None:
            return None
        rec = self.records[index]
        w, h = self.image_size
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        subject_boxes = torch.as_tensor(rec["subject_boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        object_boxes = torch.as_tensor(rec["object_boxes"], dtype=torch.float32).reshape(-1, 4) * scale
        if item["flipped"]:
            subject_boxes, object_boxes = flip_boxes(subject_boxes, w), flip_boxes(object_boxes, w)
        item.update(
            subject_boxes=subject_boxes,
            object_boxes=object_boxes,
            subject_labels=torch.as_tensor(rec["subject_labels"], dtype=torch.int64),
            object_labels=torch.as_tensor(rec["object_labels"], dtype=torch.int64),
            relationships=torch.as_tensor(rec["relationships"], dtype=torch.int64),
            image_labels=torch.as_tensor(rec["image_labels"], dtype=torch.int64),
        )
        return item


class OpenImagesRelationshipDataModule(OpenImagesDetectionDataModule):
    """Open Images V5 relationship files on top of the detection DataModule (same constructor plus
    ``num_relationships`` and ``num_attributes``, checked against the relationship names and the
    attribute list)."""

    dataset_class = OpenImagesRelationshipDataset

    def __init__(
        self,
        root: str,
        num_classes: int,
        num_relationships: int,
        num_attributes: int = 0,
        image_size: list[int] = (160, 120),
        batch_size: int = 8,
        num_workers: int = 0,
        skip_corrupt: bool = False,
        generator: Callable[[Path], object] | None = None,
    ):
        super().__init__(root, num_classes, image_size, batch_size, num_workers, skip_corrupt, generator)
        self.expected_relationships = int(num_relationships)
        self.expected_attributes = int(num_attributes)
        self.relationship_names: list[str] = []
        self.attribute_names: list[str] = []
        self.entity_names: list[str] = []
        self.entity_display_names: list[str] = []
        self.entity_classes: list[int] = []  # detection class id of each entity (-1: an attribute)

    @property
    def num_relationships(self) -> int:
        return self.expected_relationships

    @property
    def num_attributes(self) -> int:
        return self.expected_attributes

    def read_classes(self) -> Hierarchy:
        """The detection classes, then the attributes and relationship names (``entity_names``,
        ``relationship_names``)."""
        hierarchy = super().read_classes()
        names_file = self.root / CHALLENGE_VRD_FILES["relationship_names"]
        if names_file.exists():
            self.relationship_names = list(read_class_descriptions(names_file))
        else:  # no names file: the relationships of the training file, sorted
            names_file = vrd_files(self.root, "train")[0]
            rels, _ = read_relationships(names_file, skip_corrupt=True)
            self.relationship_names = sorted({r.relationship for rows in rels.values() for r in rows})
        if len(self.relationship_names) != self.expected_relationships:
            raise DataFormatError(
                names_file,
                f"{len(self.relationship_names)} relationships, "
                f"but data.num_relationships={self.expected_relationships}",
            )
        classes_file = self.root / CHALLENGE_VRD_FILES["classes"]
        shown = dict(zip(self.class_names, self.display_names))
        classes = read_class_descriptions(classes_file) if classes_file.exists() else shown
        for name in classes:
            if name not in shown:
                raise DataFormatError(classes_file, f"class {name!r} is not in class-descriptions-boxable.csv")
        attributes_file = self.root / CHALLENGE_VRD_FILES["attributes"]
        attributes = read_class_descriptions(attributes_file) if attributes_file.exists() else {}
        self.attribute_names = [a for a in attributes if a not in classes]
        if len(self.attribute_names) != self.expected_attributes:
            raise DataFormatError(
                attributes_file,
                f"{len(self.attribute_names)} attributes, but data.num_attributes={self.expected_attributes}",
            )
        self.entity_names = list(classes) + self.attribute_names
        self.entity_display_names = [shown[c] for c in classes] + [attributes[a] for a in self.attribute_names]
        index = {n: i for i, n in enumerate(self.class_names)}
        self.entity_classes = [index.get(n, -1) for n in self.entity_names]
        return hierarchy

    def split_records(self, split: str, hierarchy: Hierarchy, index: dict[str, int]) -> list[dict] | None:
        """The detection records of the images of the split's relationship file, each with its
        relationships (normalized boxes, entity and relationship ids) and image-level labels."""
        records = super().split_records(split, hierarchy, index)
        vrd_file, label_file = vrd_files(self.root, split)
        if records is None or not vrd_file.exists():
            return None
        relationships, skipped = read_relationships(vrd_file, skip_corrupt=self.skip_corrupt)
        self._skipped_rows += skipped
        entity = {n: i for i, n in enumerate(self.entity_names)}
        relationship_id = {n: i for i, n in enumerate(self.relationship_names)}
        image_labels = read_image_labels(label_file) if label_file else {}
        by_image = {rec["image_id"]: rec for rec in records}
        out = []
        for image_id in sorted(relationships):
            rec = by_image.get(image_id)
            if rec is None:
                if not self.skip_corrupt:
                    raise DataFormatError(
                        vrd_file, f"image {image_id} has relationships but no row in {split}'s box or label files"
                    )
                self._skipped_rows += len(relationships[image_id])
                continue
            rows = []
            for r in relationships[image_id]:
                unknown = [n for n in (r.label1, r.label2) if n not in entity]
                if unknown or r.relationship not in relationship_id:
                    what = f"class {unknown[0]!r}" if unknown else f"relationship {r.relationship!r}"
                    if not self.skip_corrupt:
                        raise DataFormatError(vrd_file, f"{what} of image {image_id} is not in the label maps")
                    self._skipped_rows += 1
                    continue
                rows.append(r)
            out.append(
                {
                    **rec,
                    "subject_boxes": [r.box1 for r in rows],
                    "object_boxes": [r.box2 for r in rows],
                    "subject_labels": [entity[r.label1] for r in rows],
                    "object_labels": [entity[r.label2] for r in rows],
                    "relationships": [relationship_id[r.relationship] for r in rows],
                    "image_labels": sorted(entity[n] for n in image_labels.get(image_id, {}) if n in entity),
                }
            )
        return out

    def _loader(self, key: str, shuffle: bool) -> DataLoader:
        if key not in self._datasets:
            split = SPLITS[key]
            raise FileNotFoundError(
                f"{self.root}: the {key} split needs its box file and {vrd_files(self.root, split)[0].name} "
                "(a folder generated before the relationship files existed: delete it to regenerate)"
            )
        return super()._loader(key, shuffle)
