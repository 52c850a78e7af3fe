"""Folder-per-class images, the ImageNet layout: ``<root>/<split>/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import find_classes, make_dataset

from core.images import IMAGE_SUFFIXES
from datamodules.image_classification import ImageClassificationDataModule


class ImageFolderDataModule(ImageClassificationDataModule):
    """Reads ``train/``, ``val/`` and (if present, else ``val/``) ``test/`` class folders.

    Class indices follow the sorted folder names of ``train/``; ``synsets.txt`` (``<wnid> <name>``
    per line, as in the ImageNet devkit), when present, supplies readable names."""

    def split_dir(self, split: str) -> Path:
        folder = self.root / split
        if split == "test" and not folder.exists():
            folder = self.root / "val"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: expected a folder of class sub-folders ({split} split)")
        return folder

    def split_folder(self, split: str) -> Path:
        return self.split_dir(split)

    def read_class_names(self) -> list[str]:
        classes, _ = find_classes(str(self.split_dir("train")))
        names = {}
        synsets = self.root / "synsets.txt"
        if synsets.exists():
            for line in synsets.read_text().splitlines():
                wnid, _, name = line.partition(" ")
                names[wnid] = name.strip() or wnid
        return [names.get(c, c) for c in classes]

    def read_split(self, split: str):
        classes, _ = find_classes(str(self.split_dir("train")))
        class_to_idx = {c: i for i, c in enumerate(classes)}
        folder = self.split_dir(split)
        unknown = sorted({p.name for p in folder.iterdir() if p.is_dir()} - set(classes))
        if unknown:
            raise ValueError(f"{folder}: class folders not in train/: {unknown[:5]}")
        samples = make_dataset(str(folder), class_to_idx, extensions=IMAGE_SUFFIXES, allow_empty=True)
        if not samples:
            raise FileNotFoundError(f"{folder}: no images with extensions {IMAGE_SUFFIXES}")
        return [path for path, _ in samples], [label for _, label in samples]
