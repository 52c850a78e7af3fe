"""iNaturalist 2019 (FGVC6): COCO-style JSON files with the taxonomy, images under train_val2019/."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from core.data import DataFormatError, read_json, resolve_inside_json
from datamodules.fgvc.base import FineGrainedDataModule

TAXONOMY_LEVELS = ("kingdom", "phylum", "class", "order", "family", "genus")


def load_json(path: Path, keys: Sequence[str]) -> dict:
    """The annotation file's object; each of ``keys`` must be a list of objects."""
    record = read_json(path, "the iNaturalist 2019 annotation file")
    if not isinstance(record, dict):
        raise DataFormatError(path, f"expected a JSON object with {list(keys)}, found {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        raise DataFormatError(path, f"missing top-level keys {missing}")
    for key in keys:
        if not isinstance(record[key], list):
            raise DataFormatError(path, f"{key!r} must be a list, found {json_type(record[key])}")
        for i, entry in enumerate(record[key]):
            if not isinstance(entry, dict):
                raise DataFormatError(path, f"{key}[{i}] must be an object, found {json_type(entry)}")
    return record


def json_type(value: object) -> str:
    """A JSON value as the error shows it: ``'abc' (string)``, ``null``."""
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    return f"{value!r:.40} ({kind.get(type(value), type(value).__name__)})"


def field(path: Path, entry: dict, where: str, key: str, kind: type) -> object:
    """``entry[key]``, which must be a ``kind`` (int: a JSON integer, not a boolean; str: not empty)."""
    if key not in entry:
        raise DataFormatError(path, f"{where} lacks {key!r}")
    value = entry[key]
    if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
        expected = "an integer" if kind is int else "a non-empty string"
        raise DataFormatError(path, f"{where}.{key} must be {expected}, found {json_type(value)}")
    return value


class INaturalist2019DataModule(FineGrainedDataModule):
    """Reads ``train2019.json``, ``val2019.json`` (``images``: id, file_name; ``annotations``:
    image_id, category_id; ``categories``: id, name and the taxonomy kingdom .. genus) and
    ``test2019.json`` (``images`` only). Class index = rank of the category id; submissions write the
    category id. ``taxonomy_levels`` lists the levels offered as auxiliary targets
    (:attr:`taxonomy`: for each level, the group index of every class); ``taxonomy_sizes`` ({level:
    groups}, checked against the file) is what ``task.taxonomy`` interpolates."""

    def __init__(
        self,
        root: str,
        num_classes: int,
        taxonomy_levels: Sequence[str] = ("genus", "family"),
        taxonomy_sizes: dict[str, int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, num_classes, **kwargs)
        self.expected_taxonomy_sizes = dict(taxonomy_sizes or {})
        unknown = [lvl for lvl in taxonomy_levels if lvl not in TAXONOMY_LEVELS]
        if unknown:
            raise ValueError(f"data.taxonomy_levels: unknown levels {unknown}; choose from {TAXONOMY_LEVELS}")
        self.taxonomy_levels = list(taxonomy_levels)
        self.taxonomy: dict[str, list[int]] = {}
        self.taxonomy_names: dict[str, list[str]] = {}

    def read_class_names(self) -> list[str]:
        path = self.root / "train2019.json"
        record = load_json(path, ("images", "annotations", "categories"))
        categories = record["categories"]
        for i, cat in enumerate(categories):
            missing = [k for k in ("id", "name", *self.taxonomy_levels) if k not in cat]
            if missing:
                raise DataFormatError(path, f"categories[{i}] lacks {missing}")
            field(path, cat, f"categories[{i}]", "id", int)
            for key in ("name", *self.taxonomy_levels):
                field(path, cat, f"categories[{i}]", key, str)
        categories = sorted(categories, key=lambda c: int(c["id"]))
        self.label_ids = [str(int(c["id"])) for c in categories]
        if len(set(self.label_ids)) != len(self.label_ids):
            raise DataFormatError(path, "repeated category ids")
        for level in self.taxonomy_levels:
            groups = sorted({c[level] for c in categories})
            index = {g: i for i, g in enumerate(groups)}
            self.taxonomy[level] = [index[c[level]] for c in categories]
            self.taxonomy_names[level] = groups
            expected = self.expected_taxonomy_sizes.get(level)
            if expected is not None and expected != len(groups):
                raise ValueError(
                    f"{path}: {len(groups)} {level} groups but the config says data.taxonomy_sizes.{level}={expected}"
                )
        return [c["name"] for c in categories]

    def read_labeled(self, split: str):
        path = self.root / f"{'train' if split == 'train' else 'val'}2019.json"
        record = load_json(path, ("images", "annotations"))
        index = {v: i for i, v in enumerate(self.label_ids)}
        files = {}
        for i, image in enumerate(record["images"]):
            image_id, file = self.image_entry(path, image, i)
            files[image_id] = file
        paths, labels, ids = [], [], []
        for i, ann in enumerate(record["annotations"]):
            if ann.get("image_id") not in files:
                raise DataFormatError(path, f"annotations[{i}]: unknown image_id {ann.get('image_id')!r}")
            category = str(ann.get("category_id"))
            if category not in index:
                raise DataFormatError(path, f"annotations[{i}]: unknown category_id {ann.get('category_id')!r}")
            paths.append(files[ann["image_id"]])
            labels.append(index[category])
            ids.append(str(ann["image_id"]))
        return paths, labels, ids

    def read_test(self):
        path = self.root / "test2019.json"
        record = load_json(path, ("images",))
        paths, ids = [], []
        for i, image in enumerate(record["images"]):
            image_id, file = self.image_entry(path, image, i)
            paths.append(file)
            ids.append(str(image_id))
        return paths, ids

    def image_entry(self, path: Path, image: dict, i: int) -> tuple[int, Path]:
        """(id, image file) of ``images[i]``: an integer id, and a ``file_name`` that stays inside the
        data set's root (an absolute name or ``..`` is refused, naming the line)."""
        if "id" not in image or "file_name" not in image:
            raise DataFormatError(path, f"images[{i}] lacks id or file_name")
        image_id = field(path, image, f"images[{i}]", "id", int)
        name = field(path, image, f"images[{i}]", "file_name", str)
        return image_id, resolve_inside_json(self.root, name, path)
