"""iMaterialist Product 2019 (FGVC6): ``train.json`` / ``val.json`` / ``test.json`` with
``{"images": [{"id", "url", "class"}]}`` (no ``class`` on test), images ``<split>/<id>``: "The filename of
each image is its id", and the README's sample submission writes ids as file names
(``20dc3e9e6ca73cfa3ad4d13d1d7526b8.jpg``); an id without an image extension is read as ``<id>.jpg``."""

from __future__ import annotations

from pathlib import Path

from core.data import DataFormatError, read_json, resolve_inside_json
from core.images import IMAGE_SUFFIXES
from datamodules.fgvc.base import FineGrainedDataModule


def image_file(folder: Path, image_id: str, listing: Path) -> Path:
    """The image of an id: the id is the file name, or its stem in copies that dropped ``.jpg``; an id
    that would leave ``folder`` is refused naming the ``listing`` JSON and its line."""
    suffix = "" if Path(image_id).suffix.lower() in IMAGE_SUFFIXES else ".jpg"
    return resolve_inside_json(folder, image_id, listing, suffix)


class IMaterialistProduct2019DataModule(FineGrainedDataModule):
    """Classes are the integers 0 .. num_classes-1 (the product tree's leaf ids); a class outside
    that range is an unknown id."""

    def _images(self, split: str) -> tuple:
        path = self.root / f"{split}.json"
        record = read_json(path, f"the iMaterialist {split} list")
        if "images" not in record:
            raise DataFormatError(path, "missing top-level key 'images'")
        return path, record["images"]

    def read_class_names(self) -> list[str]:
        self.label_ids = [str(c) for c in range(self.num_classes)]
        return [f"product_{c}" for c in range(self.num_classes)]

    def read_labeled(self, split: str):
        path, images = self._images(split)
        paths, labels, ids = [], [], []
        for i, image in enumerate(images):
            if "id" not in image or "class" not in image:
                raise DataFormatError(path, f"images[{i}] lacks 'id' or 'class'")
            label = image["class"]
            if not isinstance(label, int) or not 0 <= label < self.num_classes:
                raise DataFormatError(
                    path, f"images[{i}]: unknown class {label!r} (expected 0 .. {self.num_classes - 1})"
                )
            paths.append(image_file(self.root / split, str(image["id"]), path))
            labels.append(label)
            ids.append(str(image["id"]))
        return paths, labels, ids

    def read_test(self):
        path, images = self._images("test")
        ids = []
        for i, image in enumerate(images):
            if "id" not in image:
                raise DataFormatError(path, f"images[{i}] lacks 'id'")
            ids.append(str(image["id"]))
        return [image_file(self.root / "test", i, path) for i in ids], ids
